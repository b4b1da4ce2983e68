/**
 * Where `narswarm publish` gets its paths: the local Nix store (named paths, their closures, or
 * every valid path) or a binary cache (`--from-cache`, named paths and their closures, or all of a
 * listable cache). Each becomes a PublishItem in references-first order, handed on as a stream; a
 * path that cannot be had (not in the store, absent or unsigned in the cache) becomes a failure
 * with its reason, and the others go on.
 */
import { decompress } from '../nix/compression.ts'
import { dumpPath } from '../nix/nar/dump.ts'
import type { NarInfo } from '../nix/narinfo.ts'
import { fingerprint, narInfoFingerprint, trustedKeyMap, verifySignature, type PublicKey } from '../nix/signature.ts'
import { isHashPart, parseStorePathOrBaseName, toStorePath } from '../nix/store-path.ts'
import type { BinaryCache } from './binary-cache.ts'
import type { CacheWalk } from './cache-walk.ts'
import { queryPathInfos, referencesFirst, storePathOf, type PathInfo } from './path-info.ts'
import type { PublishItem } from './publisher.ts'
import { UpstreamError } from '../errors.ts'

/** What a source hands on, one path at a time: an item to publish or a path that cannot be had. */
export type Gathered = { item: PublishItem } | { failed: { path: string, reason: string } }

/** Only the signatures that verify against `keys`: nothing unverified is passed on. */
function verifiedSigs (sigs: readonly string[], fingerprint: string, keys: ReadonlyMap<string, PublicKey>): string[] {
  return keys.size === 0 ? [] : sigs.filter(s => verifySignature(s, fingerprint, keys) === 'valid')
}

export async function * fromLocalStore (paths: readonly string[], options: { closure: boolean, all: boolean, trustedKeys: readonly string[], signal?: AbortSignal }): AsyncGenerator<Gathered> {
  const wanted: string[] = []
  for (const p of paths) {
    try {
      wanted.push(storePathOf(p))
    } catch (err) {
      yield { failed: { path: p, reason: (err as Error).message } }
    }
  }
  if (!options.all && wanted.length === 0) return
  const { infos, invalid } = await queryPathInfos(wanted, { recursive: options.closure, all: options.all, ...(options.signal === undefined ? {} : { signal: options.signal }) })
  for (const failed of invalid) yield { failed }
  const keys = trustedKeyMap(options.trustedKeys)
  for (const info of referencesFirst(infos)) yield { item: localItem(info, keys) }
}

function localItem (info: PathInfo, trustedKeys: ReadonlyMap<string, PublicKey>): PublishItem {
  const fp = fingerprint({ storePath: info.storePath, narHash: info.narHash, narSize: info.narSize, references: info.references })
  return {
    storePath: info.storePath,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references,
    ...(info.deriver === undefined ? {} : { deriver: info.deriver }),
    ...(info.ca === undefined ? {} : { ca: info.ca }),
    sigs: verifiedSigs(info.sigs, fp, trustedKeys),
    // Read from the file system, not through the daemon: the bytes are checked against the
    // database's NarHash on the way, so a path altered on disk is refused.
    openNar: async (signal?: AbortSignal) => dumpPath(info.storePath, signal === undefined ? {} : { signal })
  }
}

export interface CacheOptions {
  /** Record where the NAR is in the cache instead of publishing its bytes. */
  narInfoOnly: boolean
  /** Narinfos fetched ahead. */
  concurrency: number
  signal?: AbortSignal
}

/** A store path (or a path inside one), base name or hash part as a hash part; a FormatError when it is none. */
export function hashPartOf (path: string): string {
  return isHashPart(path) ? path : parseStorePathOrBaseName(toStorePath(path)).hashPart
}

/**
 * Items of `roots` (hash parts) from `cache`, and of their closures with `closure`, streamed in
 * references-first order (see cache-walk.ts). `walk` is shared by the calls of one run, so a path
 * is handed on once.
 */
export async function * fromBinaryCache (cache: BinaryCache, walk: CacheWalk, roots: readonly string[], closure: boolean, options: CacheOptions): AsyncGenerator<Gathered> {
  const keys = trustedKeyMap(cache.trustedKeys)
  const walkOptions = { closure, window: Math.max(1, options.concurrency), ...(options.signal === undefined ? {} : { signal: options.signal }) }
  for await (const walked of walk.walk(roots, walkOptions)) {
    if ('failed' in walked) yield walked
    else yield { item: cacheItem(cache, walked.narInfo, walked.text, keys, options) }
  }
}

function cacheItem (cache: BinaryCache, narInfo: NarInfo, text: string, keys: ReadonlyMap<string, PublicKey>, options: CacheOptions): PublishItem {
  const item: PublishItem = {
    storePath: narInfo.storePath,
    narHash: narInfo.narHash,
    narSize: narInfo.narSize,
    references: [...narInfo.references],
    ...(narInfo.deriver === undefined ? {} : { deriver: narInfo.deriver }),
    ...(narInfo.ca === undefined ? {} : { ca: narInfo.ca }),
    // Kept: the signatures by the keys the cache was checked with.
    sigs: verifiedSigs(narInfo.sigs, narInfoFingerprint(narInfo), keys)
  }
  if (options.narInfoOnly) {
    const locator = { url: cache.narUrl(narInfo), compression: narInfo.compression, ...(narInfo.fileSize === undefined ? {} : { fileSize: narInfo.fileSize }) }
    return { ...item, existing: { locator, narInfo: text } }
  }
  item.openNar = async (signal?: AbortSignal) => {
    const stream = await cache.openNar(narInfo, signal)
    if (stream === undefined) throw new UpstreamError(cache.name, `has the narinfo of ${narInfo.storePath} but not its NAR ${narInfo.url}`)
    return decompress(stream.compression, stream.body, { ...(signal === undefined ? {} : { signal }), sizeHint: stream.fileSize ?? narInfo.fileSize ?? narInfo.narSize })
  }
  return item
}
