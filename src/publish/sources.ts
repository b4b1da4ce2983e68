/**
 * Where `narswarm publish` gets its paths: the local Nix store (named paths, their closures, or
 * every valid path) or a binary cache (`--from-cache`, named paths and their closures, or all of a
 * listable cache). Each becomes a PublishItem in references-first order; a path that cannot be
 * had (not in the store, absent or unsigned in the cache) becomes a failure with its reason, and
 * the others go on.
 */
import { decompress } from '../nix/compression.ts'
import { dumpPath } from '../nix/nar/dump.ts'
import type { NarInfo } from '../nix/narinfo.ts'
import { fingerprint, narInfoFingerprint, trustedKeyMap, verifySignature, type PublicKey } from '../nix/signature.ts'
import { isHashPart, parseStorePath, parseStorePathOrBaseName, STORE_DIR } from '../nix/store-path.ts'
import type { BinaryCache } from './binary-cache.ts'
import { queryPathInfos, referencesFirst, type PathInfo } from './path-info.ts'
import type { PublishItem } from './publisher.ts'
import { UpstreamError } from '../errors.ts'

export interface Gathered {
  items: PublishItem[]
  failed: Array<{ path: string, reason: string }>
}

/** Only the signatures that verify against `keys`: nothing unverified is passed on. */
function verifiedSigs (sigs: readonly string[], fingerprint: string, keys: ReadonlyMap<string, PublicKey>): string[] {
  return keys.size === 0 ? [] : sigs.filter(s => verifySignature(s, fingerprint, keys) === 'valid')
}

export async function fromLocalStore (paths: string[], options: { closure: boolean, all: boolean, trustedKeys: readonly string[], signal?: AbortSignal }): Promise<Gathered> {
  const failed: Gathered['failed'] = []
  const wanted: string[] = []
  for (const p of paths) {
    try {
      // A path inside a store path (…/bin/hello) names the store path, as in Nix.
      wanted.push(parseStorePath(p.split('/').slice(0, 4).join('/')).path)
    } catch (err) {
      failed.push({ path: p, reason: (err as Error).message })
    }
  }
  if (!options.all && wanted.length === 0) return { items: [], failed }
  const { infos, invalid } = await queryPathInfos(wanted, { recursive: options.closure, all: options.all, ...(options.signal === undefined ? {} : { signal: options.signal }) })
  failed.push(...invalid)
  const keys = trustedKeyMap(options.trustedKeys)
  const items = referencesFirst(infos).map(info => localItem(info, keys))
  return { items, failed }
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
  closure: boolean
  /** Record where the NAR is in the cache instead of publishing its bytes. */
  narInfoOnly: boolean
  /** Narinfos fetched at once. */
  concurrency: number
  signal?: AbortSignal
}

/** Items of `paths` (store paths or hash parts; every path of the cache when empty) from `cache`. */
export async function fromBinaryCache (cache: BinaryCache, paths: string[], options: CacheOptions): Promise<Gathered> {
  const failed: Gathered['failed'] = []
  let roots: string[] = []
  if (paths.length === 0) {
    if (cache.list === undefined) {
      return { items: [], failed: [{ path: cache.name, reason: 'an HTTP binary cache cannot be listed: name the store paths to publish from it' }] }
    }
    for await (const h of cache.list()) roots.push(h)
  } else {
    for (const p of paths) {
      try {
        roots.push(isHashPart(p) ? p : parseStorePathOrBaseName(p.split('/').slice(0, 4).join('/')).hashPart)
      } catch (err) {
        failed.push({ path: p, reason: (err as Error).message })
      }
    }
  }
  const found = new Map<string, NarInfo>()
  const texts = new Map<string, string>()
  const seen = new Set(roots)
  // Breadth first over references when a closure is asked for, `concurrency` narinfos at a time.
  while (roots.length > 0) {
    const batch = roots
    roots = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < batch.length) {
        const hashPart = batch[next++]!
        try {
          const answer = await cache.narInfo(hashPart, options.signal)
          if (answer.kind === 'absent') { failed.push({ path: hashPart, reason: `not in ${cache.name} (HTTP ${answer.status})` }); continue }
          if (answer.kind === 'rejected') { failed.push({ path: hashPart, reason: `narinfo refused: ${answer.reason}` }); continue }
          found.set(hashPart, answer.narInfo)
          texts.set(hashPart, answer.text)
          if (options.closure) {
            for (const ref of answer.narInfo.references) {
              const h = parseStorePathOrBaseName(ref).hashPart
              if (!seen.has(h)) { seen.add(h); roots.push(h) }
            }
          }
        } catch (err) {
          if (options.signal?.aborted === true) throw err
          failed.push({ path: hashPart, reason: (err as Error).message })
        }
      }
    }
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency) }, worker))
  }
  const nodes = [...found.values()].map(n => ({ storePath: n.storePath, references: n.references.map(r => `${STORE_DIR}/${r}`), narInfo: n }))
  const keys = trustedKeyMap(cache.trustedKeys)
  const items = referencesFirst(nodes).map(({ narInfo }) => cacheItem(cache, narInfo, texts.get(narInfo.hashPart)!, keys, options))
  return { items, failed }
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
