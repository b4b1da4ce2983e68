/**
 * Where the NAR with a given NarHash comes from, for the substituter: the chunk store when it holds
 * it; else the one shared fetch for that NarHash (`NarFetch`), started by the first request and
 * tailed by every other, whose candidates are built here — every locator the mappers know (by
 * NarHash, and by FileHash for indexes keyed the nix-subsubd way), opened by the backend for the
 * locator's scheme; the store fillers (LAN peers); and the upstreams, the ones whose narinfo we
 * hold first.
 *
 * When local storage fails (no spool file can be written: disk full, read-only), requests are
 * still answered: for `storageRetry` a request relays an upstream straight through `verifyNar`
 * (no sharing, no caching), then the spool is tried again, so service recovers by itself.
 */
import { join } from 'node:path'
import { FormatError, IntegrityError, StorageError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { WriteGuard } from '../state/write-guard.ts'
import { decompress } from '../nix/compression.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { race, type RaceCandidate } from '../backend/race.ts'
import type { SourceScores } from '../backend/scores.ts'
import type { ChunkFrames, ChunkStore, NarIdentity, StoreFiller } from '../chunk/types.ts'
import type { SourceHealth } from '../upstream/health.ts'
import type { Upstream } from '../upstream/upstream.ts'
import { sliceBytes, verifyNar } from '../util/verify.ts'
import type { Backend, Mapper } from '../types.ts'
import { NarFetch, type NarFetchContext } from './nar-fetch.ts'
import type { NarReader } from './shared-nar.ts'
import { renderRange } from './store-range.ts'
import type { Observer } from './observer.ts'

export interface NarSourcesInit {
  upstreams: Upstream[]
  health: SourceHealth
  scores: SourceScores
  log: Logger
  mappers: Mapper[]
  backends: Backend[]
  hedgeDelay: number
  firstByteTimeout: number
  untrustedBudget: number
  store?: ChunkStore
  fillers: StoreFiller[]
  /** Where fetches spool their bytes; created (and emptied) by the caller. */
  spoolDir: string
  /** Counts verification failures for `/metrics`. */
  observer?: Observer
}

/** A cached narinfo that names the NAR, and the upstream it came from. */
export interface NarInfoRow { text: string, upstream: string }

const STORAGE_RETRY = 30_000

export class NarSources {
  readonly #init: NarSourcesInit
  readonly #byName: Map<string, Upstream>
  readonly #fetches = new Map<string, NarFetch>()
  readonly #ctx: NarFetchContext
  #directUntil = 0
  readonly #storage: Record<'spool' | 'store', WriteGuard>

  constructor (init: NarSourcesInit) {
    this.#init = init
    this.#byName = new Map(init.upstreams.map(u => [u.name, u]))
    this.#storage = {
      spool: new WriteGuard({ what: 'NAR spool', log: init.log }),
      store: new WriteGuard({ what: 'chunk store', log: init.log })
    }
    this.#ctx = {
      store: init.store,
      spoolDir: init.spoolDir,
      log: init.log,
      health: init.health,
      scores: init.scores,
      hedgeDelay: init.hedgeDelay,
      firstByteTimeout: init.firstByteTimeout,
      untrustedBudget: init.untrustedBudget,
      integrityFailed: source => init.observer?.verificationFailed(source),
      storageFailed: (err, where) => this.#storageFailed(err, where)
    }
  }

  /** The NAR as the store holds it: its identity, or undefined. */
  stored (narHash: NarIdentity['narHash']): NarIdentity | undefined {
    const narSize = this.#init.store?.narSize(narHash)
    return narSize === undefined ? undefined : { narHash, narSize }
  }

  /** The NAR as zstd frames from the store, or undefined when it does not hold it. */
  storedFrames (narHash: NarIdentity['narHash'], signal?: AbortSignal): AsyncIterable<ChunkFrames> | undefined {
    return this.#init.store?.renderFrames(narHash, signal === undefined ? {} : { signal })
  }

  /**
   * Bytes [start, end) of the NAR: from the store, else from the shared fetch for `expected` (its
   * narinfo; `rows`, every cached narinfo naming it). Undefined when every source said it is
   * absent; throws UpstreamError when none delivered and one failed.
   */
  async open (identity: NarIdentity, expected: NarInfo | undefined, rows: NarInfoRow[], start: number, end: number, signal?: AbortSignal): Promise<NarReader | undefined> {
    const { store } = this.#init
    const fromStore = store === undefined ? undefined : renderRange(store, identity.narHash, start, end, signal)
    if (fromStore !== undefined) return { body: fromStore, source: () => 'store', close: () => {} }
    if (expected === undefined) return undefined
    if (Date.now() < this.#directUntil) return await this.#openDirect(expected, rows, start, end, signal)
    const key = identity.narHash.toNix32()
    let fetch = this.#fetches.get(key)
    if (fetch === undefined) {
      const created = new NarFetch(identity, {
        untrusted: async s => this.#init.scores.rank(await this.#indexCandidates(expected, s), c => c.name),
        fillers: this.#init.fillers,
        upstreams: this.#upstreamCandidates(rows, expected),
        ...(expected.fileSize === undefined ? {} : { fileSize: expected.fileSize })
      }, this.#ctx)
      fetch = created
      this.#fetches.set(key, created)
      void created.done.finally(() => { if (this.#fetches.get(key) === created) this.#fetches.delete(key) })
    }
    let reader: NarReader | undefined
    try {
      reader = await fetch.open(start, end, signal)
    } catch (err) {
      // The spool could not be written: answer anyway, without sharing or caching.
      if (err instanceof StorageError && signal?.aborted !== true) return await this.#openDirect(expected, rows, start, end, signal)
      throw err
    }
    if (reader === undefined) return undefined
    return { ...reader, body: this.#resumeDirect(reader.body, expected, rows, start, end, signal) }
  }

  /** A shared fetch whose spool failed under a reader: the reader goes on from a direct relay. */
  async * #resumeDirect (body: AsyncIterable<Uint8Array>, expected: NarInfo, rows: NarInfoRow[], start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    let position = start
    try {
      for await (const chunk of body) {
        position += chunk.length
        yield chunk
      }
      return
    } catch (err) {
      // The storage failed under this reader, not the sources.
      if (signal?.aborted === true || !(err instanceof StorageError)) throw err
    }
    const direct = await this.#openDirect(expected, rows, position, end, signal)
    if (direct === undefined) throw new UpstreamError('sources', `NAR ${expected.storePath} is gone from every upstream`)
    yield * direct.body
  }

  /** Stops every running fetch (shutdown). */
  abortAll (): void {
    for (const fetch of this.#fetches.values()) fetch.abort(new Error('narswarm is stopping'))
  }

  /**
   * Logged as every state write is; never ended by a success, since one NAR that fits says nothing
   * about the next, so the log says it at most once a minute however the disk flaps.
   */
  #storageFailed (err: StorageError, where: 'spool' | 'store'): void {
    if (where === 'spool') this.#directUntil = Date.now() + STORAGE_RETRY
    this.#storage[where].failed(err)
  }

  /** The old relay: the upstreams only, verified as they stream, with no spool and no store. */
  async #openDirect (expected: NarInfo, rows: NarInfoRow[], start: number, end: number, signal?: AbortSignal): Promise<NarReader | undefined> {
    const narHash = expected.narHash.toNix32()
    const candidates = this.#upstreamCandidates(rows, expected).filter(c => !this.#init.health.isBadFor(c.name, narHash))
    if (candidates.length === 0) throw new UpstreamError('sources', `no upstream may deliver NAR ${narHash}`)
    const winner = await race(candidates, {
      scores: this.#init.scores, hedgeDelay: this.#init.hedgeDelay, firstByteTimeout: this.#init.firstByteTimeout, signal, rank: false
    })
    if (winner === undefined) return undefined
    const { source, name } = winner
    const what = `NAR of ${expected.storePath} from ${name}`
    const verified = verifyNar(decompress(source.compression, source.body, { signal, sizeHint: source.fileSize ?? expected.fileSize }), expected, what)
    const body = this.#guard(start === 0 && end === expected.narSize ? verified : sliceBytes(verified, start, end), name, expected)
    return { body, source: () => name, close: () => {} }
  }

  /** Every locator the mappers know for this NAR, as race candidates of the backend for its scheme. */
  async #indexCandidates (expected: NarInfo, signal: AbortSignal): Promise<RaceCandidate[]> {
    const { mappers, backends, log } = this.#init
    if (mappers.length === 0 || backends.length === 0) return []
    const keys = expected.fileHash === undefined ? [expected.narHash] : [expected.narHash, expected.fileHash]
    // Every lookup at once: they stand between Nix's request and the race's first byte.
    const lookups = await Promise.all(mappers.flatMap(mapper => keys.map(async key => {
      try {
        return { mapper, locators: await mapper.lookup(key, { signal }) }
      } catch (err) {
        if (signal.aborted) throw err
        log.warn({ mapper: mapper.name, err: (err as Error).message }, 'index lookup failed')
        return { mapper, locators: [] }
      }
    })))
    const seen = new Set<string>()
    const candidates: RaceCandidate[] = []
    for (const { mapper, locators } of lookups) {
      for (const locator of locators) {
        if (seen.has(locator.url)) continue
        seen.add(locator.url)
        const scheme = locator.url.slice(0, Math.max(locator.url.indexOf(':'), 0))
        // Several backends may share a scheme (two mirror sets, two directories): each gets a
        // turn, and one that does not hold the locator answers "not here" at once.
        const matching = backends.filter(b => b.schemes.includes(scheme))
        if (matching.length === 0) log.debug({ mapper: mapper.name, scheme }, 'no backend for a locator scheme')
        for (const backend of matching) {
          candidates.push({ name: backend.name, open: async s => await backend.open(locator, { signal: s }) })
        }
      }
    }
    return candidates
  }

  /**
   * The upstreams: those whose narinfo we hold first (sources on probation after the others, then
   * by priority), then every other upstream, which is asked for its narinfo only when its turn in
   * the race comes and counts only with the same NarHash.
   */
  #upstreamCandidates (rows: NarInfoRow[], expected: NarInfo): RaceCandidate[] {
    const { health, upstreams } = this.#init
    const rank = (u: Upstream): number => (health.onProbation(u.name) ? 1 : 0)
    const byPreference = (a: Upstream, b: Upstream): number => rank(a) - rank(b) || a.priority - b.priority
    const known = rows.flatMap((r, i) => {
      const upstream = this.#byName.get(r.upstream)
      return upstream === undefined ? [] : [{ upstream, narInfo: i === 0 ? expected : NarInfo.parse(r.text) }]
    }).sort((a, b) => byPreference(a.upstream, b.upstream))
    const asked = new Set(known.map(k => k.upstream))
    const others = [...upstreams].sort(byPreference).filter(u => !asked.has(u))
    return [
      ...known.map(({ upstream, narInfo }) => ({ name: upstream.name, open: async (signal: AbortSignal) => await upstream.openNar(narInfo, { signal }) })),
      ...others.map(upstream => ({
        name: upstream.name,
        open: async (signal: AbortSignal) => {
          const answer = await upstream.fetchNarInfo(expected.hashPart, { signal })
          if (answer.kind !== 'found' || !answer.narInfo.narHash.equals(expected.narHash) || answer.narInfo.narSize !== expected.narSize) return undefined
          return await upstream.openNar(answer.narInfo, { signal })
        }
      }))
    ]
  }

  /** Marks the source bad and logs when the bytes fail verification; rethrows either way. */
  async * #guard (body: AsyncIterable<Uint8Array>, source: string, narInfo: NarInfo): AsyncGenerator<Uint8Array> {
    try {
      yield * body
    } catch (err) {
      if (err instanceof IntegrityError || err instanceof FormatError) {
        this.#init.health.markBad(source, narInfo.narHash.toNix32())
        this.#init.scores.integrityFailure(source)
        this.#init.observer?.verificationFailed(source)
        this.#init.log.error({ storePath: narInfo.storePath, narHash: narInfo.narHash.toString(), source, err: (err as Error).message },
          'NAR failed verification; response aborted, source marked bad')
      }
      throw err
    }
  }
}

/** The spool directory under the state directory. */
export function spoolDirOf (stateDir: string): string {
  return join(stateDir, 'spool')
}
