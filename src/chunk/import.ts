/**
 * Pre-seeding the chunk store (`narswarm cache import`): from a binary cache that Nix wrote (a
 * `file://` directory or an HTTP cache; any compression), or from paths of the local Nix store.
 * The sources are those of `narswarm publish`, so the same trust rule holds: a narinfo counts only
 * when signed by a trusted key, and every NAR is checked against its NarHash and NarSize on the
 * way in. Signed narinfos from a cache also go into the narinfo cache, so the substituter can
 * answer for those paths without asking an upstream.
 */
import { parseStorePath } from '../nix/store-path.ts'
import { openBinaryCache } from '../publish/binary-cache.ts'
import type { PublishItem } from '../publish/publisher.ts'
import { CacheWalk } from '../publish/cache-walk.ts'
import { fromBinaryCache, fromLocalStore, hashPartOf, type Gathered } from '../publish/sources.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import type { LocalChunkStore } from './store.ts'

export interface ImportReport {
  /** NARs ingested now. */
  imported: number
  /** NARs the store already held. */
  present: number
  /** Bytes of NAR ingested now. */
  bytes: number
  failed: Array<{ path: string, reason: string }>
}

export interface ImportOptions {
  closure: boolean
  trustedKeys: readonly string[]
  signal?: AbortSignal
  /** Called after each path, for progress. */
  onPath?: (storePath: string, outcome: 'imported' | 'present' | 'failed') => void
}

/** Imports `paths` (every path when empty and the cache is a directory) of the cache at `spec`. */
export async function importFromCache (store: LocalChunkStore, narInfos: NarInfoCache | undefined, spec: string, paths: string[], options: ImportOptions): Promise<ImportReport> {
  const cache = openBinaryCache(spec, options.trustedKeys)
  try {
    let roots: string[] = []
    const failed: Gathered[] = []
    for (const p of paths) {
      try { roots.push(hashPartOf(p)) } catch (err) { failed.push({ failed: { path: p, reason: (err as Error).message } }) }
    }
    if (paths.length === 0) {
      if (cache.list === undefined) throw new Error(`${cache.name} cannot be listed: name the store paths to import from it`)
      roots = []
      for await (const h of cache.list()) roots.push(h)
    }
    // The walk's signed narinfo texts, kept until their NAR is in: the narinfo cache gets the
    // very narinfo whose NAR was verified, without asking the cache for it again.
    const texts = new Map<string, string>()
    const walk = new CacheWalk(cache.name, async (h, s) => {
      const answer = await cache.narInfo(h, s)
      if (answer.kind === 'found' && narInfos !== undefined) texts.set(h, answer.text)
      return answer
    })
    const gathered = (async function * (): AsyncGenerator<Gathered> {
      yield * failed
      yield * fromBinaryCache(cache, walk, roots, options.closure, { narInfoOnly: false, concurrency: 8, ...signalOf(options) })
    })()
    return await ingestItems(store, gathered, options, item => {
      const hashPart = parseStorePath(item.storePath).hashPart
      const text = texts.get(hashPart)
      texts.delete(hashPart)
      if (text !== undefined) narInfos?.putPresent(hashPart, item.narHash.toNix32(), text, cache.name)
    })
  } finally {
    await cache.close()
  }
}

/** Imports store paths of the local Nix store (dumped from disk, checked against Nix's NarHash). */
export async function importFromLocalStore (store: LocalChunkStore, paths: string[], options: ImportOptions): Promise<ImportReport> {
  const gathered = fromLocalStore(paths, { closure: options.closure, all: false, trustedKeys: options.trustedKeys, ...signalOf(options) })
  return await ingestItems(store, gathered, options, () => {})
}

async function ingestItems (store: LocalChunkStore, gathered: AsyncIterable<Gathered>, options: ImportOptions, after: (item: PublishItem) => void): Promise<ImportReport> {
  const report: ImportReport = { imported: 0, present: 0, bytes: 0, failed: [] }
  for await (const entry of gathered) {
    options.signal?.throwIfAborted()
    if ('failed' in entry) {
      report.failed.push(entry.failed)
      options.onPath?.(entry.failed.path, 'failed')
      continue
    }
    const item = entry.item
    const identity = { narHash: item.narHash, narSize: item.narSize, storePath: item.storePath }
    try {
      const present = store.manifest(item.narHash) !== undefined
      // A NAR already held is not read again; its store path is recorded all the same.
      await store.ingest(identity, await item.openNar!(options.signal), signalOf(options))
      after(item)
      if (present) report.present++
      else { report.imported++; report.bytes += item.narSize }
      options.onPath?.(item.storePath, present ? 'present' : 'imported')
    } catch (err) {
      if (options.signal?.aborted === true) throw err
      report.failed.push({ path: item.storePath, reason: (err as Error).message })
      options.onPath?.(item.storePath, 'failed')
    }
  }
  return report
}

function signalOf (options: { signal?: AbortSignal }): { signal?: AbortSignal } {
  return options.signal === undefined ? {} : { signal: options.signal }
}
