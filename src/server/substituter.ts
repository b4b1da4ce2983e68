/**
 * The substituter's logic, free of HTTP: answer a narinfo request and open a verified NAR.
 *
 * Narinfo: the SQLite cache first, else the index (mappers that keep signed narinfos, checked
 * against the index keys), else every upstream (see `queryNarInfo`), else — only when every
 * upstream failed, never when they said absent — the fallback (LAN peers), whose narinfo counts
 * only when signed by an index key. What Nix gets is the narinfo with only
 * URL/Compression/FileHash/FileSize rewritten (signatures do not cover them) to point at our own
 * uncompressed URL `nar/<nix32 narHash>.nar?hash=<hash part>`; every other line, every `Sig`
 * included, is kept byte for byte. The hash part in the URL lets narswarm find the path again
 * for as long as Nix keeps the narinfo (30 days), whatever narswarm lost meanwhile (its state
 * directory, an expired narinfo, a restart on the same address), as harmonia does.
 *
 * NAR: from the chunk store when it holds it, else through one shared fetch per NarHash (see
 * `NarSources` and `NarFetch`): untrusted sources first, verified in full before any byte is
 * released, the upstreams streaming through `verifyNar`; every verified NAR is committed to the
 * store. A NAR that every source says is absent takes its narinfos out of the cache.
 */
import { UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { narFileName } from '../nix/compression.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import type { SourceHealth } from '../upstream/health.ts'
import { parseServedNarInfo, type Upstream } from '../upstream/upstream.ts'
import { queryNarInfo } from '../upstream/upstreams.ts'
import { ExpiringLru } from '../util/lru.ts'
import { SourceScores } from '../backend/scores.ts'
import { NixHash } from '../nix/hash.ts'
import { trustedKeyMap, verifyNarInfo, type PublicKey } from '../nix/signature.ts'
import type { AbortOptions, Backend, Mapper } from '../types.ts'
import type { ChunkFrames, ChunkStore, NarIdentity, StoreFiller } from '../chunk/types.ts'
import type { NarReader } from './shared-nar.ts'
import { NarSources } from './nar-sources.ts'
import { openSideFile, type SideFile, type SideFileKind } from './side-files.ts'
import type { NarInfoResult, Observer, SourceKind } from './observer.ts'

export type NarInfoResponse =
  | NarInfoFound
  | { kind: 'absent' }
  | { kind: 'failed', error: UpstreamError }

/** A narinfo to serve: the uncompressed form for every client, the zstd one made when first asked for. */
export interface NarInfoFound {
  kind: 'found'
  narInfo: NarInfo
  body: Buffer
  zstdBody?: Buffer
}

export interface NarHandle {
  /** What the NAR must be. */
  identity: NarIdentity
  /** Bytes [start, end); undefined when every source says the NAR is gone. */
  open: (start: number, end: number, signal?: AbortSignal) => Promise<NarReader | undefined>
  /** The NAR as zstd frames from the chunk store, when it holds it (ChunkStore.renderFrames). */
  frames?: (signal?: AbortSignal) => AsyncIterable<ChunkFrames> | undefined
}

export interface SubstituterInit {
  upstreams: Upstream[]
  cache: NarInfoCache
  health: SourceHealth
  log: Logger
  mappers?: Mapper[]
  backends?: Backend[]
  /** Keys that make a narinfo from a mapper (or the fallback) usable. */
  indexKeys?: string[]
  scores?: SourceScores
  hedgeDelay?: number
  firstByteTimeout?: number
  /** Where every verified NAR is kept, and served from. */
  store?: ChunkStore
  /** Sources that fill the store themselves (LAN peers), raced as untrusted sources. */
  fillers?: StoreFiller[]
  /** Asked for a narinfo only when every upstream failed (not when they said absent). */
  narInfoFallback?: (hashPart: string, options: AbortOptions) => Promise<string | undefined>
  /** Milliseconds untrusted sources get to complete a NAR before the upstreams start too. */
  untrustedBudget?: number
  /** Where NAR fetches spool their bytes (emptied at start by the caller). */
  spoolDir: string
  /** Counts narinfo answers and verification failures for `/metrics`. */
  observer?: Observer
}

export class Substituter {
  readonly #upstreams: Upstream[]
  /** The same, the preferred first: the order side files are looked for in. */
  readonly #byPriority: Upstream[]
  readonly #cache: NarInfoCache
  readonly #log: Logger
  readonly #mappers: Mapper[]
  readonly #indexKeys: ReadonlyMap<string, PublicKey>
  readonly #narInfoFallback: SubstituterInit['narInfoFallback']
  readonly #firstByteTimeout: number
  readonly #nars: NarSources
  readonly #observer: Observer | undefined
  readonly #upstreamNames: ReadonlySet<string>
  readonly #fillerNames: ReadonlySet<string>
  /** Rendered answers, so a hit costs neither SQLite nor a re-serialization; same expiry as the cache. */
  readonly #answers = new ExpiringLru<string, NarInfoResponse>(50_000)
  /** Concurrent requests for one hash part share one upstream query. */
  readonly #inFlight = new Map<string, Promise<NarInfoResponse>>()

  constructor (init: SubstituterInit) {
    this.#upstreams = init.upstreams
    this.#byPriority = [...init.upstreams].sort((a, b) => a.priority - b.priority)
    this.#cache = init.cache
    this.#log = init.log
    this.#mappers = init.mappers ?? []
    this.#indexKeys = trustedKeyMap(init.indexKeys ?? [])
    this.#narInfoFallback = init.narInfoFallback
    this.#firstByteTimeout = init.firstByteTimeout ?? 30_000
    this.#nars = new NarSources({
      upstreams: init.upstreams,
      health: init.health,
      scores: init.scores ?? new SourceScores(),
      log: init.log,
      mappers: this.#mappers,
      backends: init.backends ?? [],
      hedgeDelay: init.hedgeDelay ?? 250,
      firstByteTimeout: this.#firstByteTimeout,
      untrustedBudget: init.untrustedBudget ?? DEFAULT_UNTRUSTED_BUDGET,
      fillers: init.fillers ?? [],
      spoolDir: init.spoolDir,
      ...(init.store === undefined ? {} : { store: init.store }),
      ...(init.observer === undefined ? {} : { observer: init.observer })
    })
    this.#observer = init.observer
    this.#upstreamNames = new Set(init.upstreams.map(u => u.name))
    this.#fillerNames = new Set((init.fillers ?? []).map(f => f.name))
  }

  /**
   * The narinfo to serve for `hashPart` (already validated as 32 nix32 characters). For a client
   * that decodes zstd, a NAR the chunk store holds is offered as `.nar.zst`: its compressed chunks
   * go out as they are stored, and the client decompresses them (see `rewrite`).
   */
  async narInfo (hashPart: string, options: { zstd?: boolean } = {}): Promise<NarInfoResponse> {
    const { response, result } = await this.#resolveNarInfo(hashPart)
    this.#observer?.narInfo(result)
    if (response.kind !== 'found' || options.zstd !== true || this.#nars.stored(response.narInfo.narHash) === undefined) return response
    response.zstdBody ??= rewrite(response.narInfo, 'zstd')
    return { ...response, body: response.zstdBody }
  }

  /** The narinfo for `hashPart`, and how it was found (counted only for Nix's narinfo requests). */
  async #resolveNarInfo (hashPart: string): Promise<{ response: NarInfoResponse, result: NarInfoResult }> {
    const answer = this.#answers.get(hashPart)
    if (answer !== undefined) return { response: answer, result: 'cache-hit' }
    const cached = this.#cache.get(hashPart)
    if (cached !== undefined) {
      const response = this.#remember(hashPart, cached.present ? found(NarInfo.parse(cached.text)) : ABSENT, cached.expiresAt)
      return { response, result: 'cache-hit' }
    }
    let pending = this.#inFlight.get(hashPart)
    if (pending === undefined) {
      pending = this.#fetchNarInfo(hashPart).finally(() => this.#inFlight.delete(hashPart))
      this.#inFlight.set(hashPart, pending)
    }
    const response = await pending
    return { response, result: response.kind === 'found' ? 'fetched' : response.kind }
  }

  /** What kind of source a source name (as a NarReader reports it) is, for metrics and the status page. */
  sourceKind (source: string): SourceKind {
    if (source === 'store') return 'store'
    if (this.#upstreamNames.has(source)) return 'upstream'
    if (this.#fillerNames.has(source)) return 'peer'
    return 'backend'
  }

  async #fetchNarInfo (hashPart: string): Promise<NarInfoResponse> {
    const indexed = await this.#narInfoFromIndex(hashPart)
    if (indexed !== undefined) {
      const expiresAt = this.#cache.putPresent(hashPart, indexed.narInfo.narHash.toNix32(), indexed.text, `index:${indexed.mapper}`)
      this.#log.debug({ mapper: indexed.mapper, storePath: indexed.narInfo.storePath }, 'narinfo from the index')
      return this.#remember(hashPart, found(indexed.narInfo), expiresAt)
    }
    const started = performance.now()
    const outcome = await queryNarInfo(this.#upstreams, hashPart, this.#log)
    const ms = Math.round(performance.now() - started)
    switch (outcome.kind) {
      case 'found': {
        // NarInfo.parse accepts only sha256 NarHashes, the one algorithm Nix checks NARs with.
        const { narInfo, upstream, text } = outcome
        const expiresAt = this.#cache.putPresent(hashPart, narInfo.narHash.toNix32(), text, upstream.name)
        this.#log.debug({ upstream: upstream.name, storePath: narInfo.storePath, ms }, 'narinfo fetched')
        return this.#remember(hashPart, found(narInfo), expiresAt)
      }
      case 'absent':
        this.#log.debug({ hashPart, ms }, 'narinfo absent from every upstream')
        if (outcome.negativeCacheable) return this.#remember(hashPart, ABSENT, this.#cache.putAbsent(hashPart))
        return ABSENT
      case 'failed': {
        const fallback = await this.#narInfoFromFallback(hashPart)
        if (fallback !== undefined) {
          const expiresAt = this.#cache.putPresent(hashPart, fallback.narHash.toNix32(), fallback.toString(), 'fallback')
          this.#log.info({ storePath: fallback.storePath, ms }, 'narinfo from the fallback: every upstream failed')
          return this.#remember(hashPart, found(fallback), expiresAt)
        }
        const error = outcome.errors.length === 1
          ? outcome.errors[0]!
          : new UpstreamError('upstreams', outcome.errors.map(e => e.message).join('; '), { timeout: outcome.errors.every(e => e.timeout) })
        return { kind: 'failed', error }
      }
    }
  }

  /** The first narinfo a mapper has for `hashPart` that is signed by an index key. */
  async #narInfoFromIndex (hashPart: string): Promise<{ narInfo: NarInfo, text: string, mapper: string } | undefined> {
    for (const mapper of this.#mappers) {
      if (mapper.narInfo === undefined) continue
      try {
        const text = await mapper.narInfo(hashPart)
        if (text === undefined) continue
        const served = parseServedNarInfo(text, hashPart)
        if (served.kind === 'rejected') {
          this.#log.warn({ mapper: mapper.name, hashPart, reason: served.reason }, 'index narinfo rejected')
          continue
        }
        const verdict = verifyNarInfo(served.narInfo, this.#indexKeys)
        if (verdict.valid) return { narInfo: served.narInfo, text, mapper: mapper.name }
        this.#log.warn({ mapper: mapper.name, hashPart, problems: verdict.problems }, 'index narinfo rejected: not signed by a trusted key')
      } catch (err) {
        this.#log.warn({ mapper: mapper.name, hashPart, err: (err as Error).message }, 'index narinfo unavailable')
      }
    }
    return undefined
  }

  /** The fallback's narinfo, only when it is about `hashPart` and signed by an index key. */
  async #narInfoFromFallback (hashPart: string): Promise<NarInfo | undefined> {
    if (this.#narInfoFallback === undefined) return undefined
    try {
      const text = await this.#narInfoFallback(hashPart, { signal: AbortSignal.timeout(this.#firstByteTimeout) })
      if (text === undefined) return undefined
      const served = parseServedNarInfo(text, hashPart)
      if (served.kind === 'rejected') {
        this.#log.warn({ hashPart, reason: served.reason }, 'fallback narinfo rejected')
        return undefined
      }
      const verdict = verifyNarInfo(served.narInfo, this.#indexKeys)
      if (verdict.valid) return served.narInfo
      this.#log.warn({ hashPart, problems: verdict.problems }, 'fallback narinfo rejected: not signed by a trusted key')
    } catch (err) {
      this.#log.warn({ hashPart, err: (err as Error).message }, 'fallback narinfo unavailable')
    }
    return undefined
  }

  #remember (hashPart: string, answer: NarInfoResponse, expiresAt: number): NarInfoResponse {
    this.#answers.set(hashPart, answer, expiresAt)
    return answer
  }

  /**
   * The NAR with this NarHash (nix32), found again whatever narswarm forgot since it handed out the
   * URL: in the chunk store; else through the live narinfos that name it; else, when the URL
   * carries the store path's hash part, through that narinfo (cache, index, upstreams, fallback),
   * which must name the same NarHash. Undefined when nothing names it (or `narHash` is no sha256
   * digest, though its characters are nix32's); throws UpstreamError when
   * the narinfo could not be fetched.
   */
  async findNar (narHash: string, hashPart?: string): Promise<NarHandle | undefined> {
    const digest = NixHash.fromNix32('sha256', narHash)
    if (digest === undefined) return undefined
    let rows = this.#cache.findByNarHash(narHash)
    const stored = this.#nars.stored(digest)
    if (stored !== undefined) {
      // The store path only names the NAR in logs.
      const identity = rows.length > 0 ? { ...stored, storePath: NarInfo.parse(rows[0]!.text).storePath } : stored
      return {
        identity,
        open: async (start, end, signal) => await this.#nars.open(identity, undefined, [], start, end, signal),
        frames: signal => this.#nars.storedFrames(identity.narHash, signal)
      }
    }
    let expected = rows.length > 0 ? NarInfo.parse(rows[0]!.text) : undefined
    if (expected === undefined && hashPart !== undefined) {
      const { response: answer } = await this.#resolveNarInfo(hashPart)
      if (answer.kind === 'failed') throw answer.error
      if (answer.kind === 'found') {
        const served = answer.narInfo
        if (served.narHash.toNix32() === narHash) {
          rows = this.#cache.findByNarHash(narHash)
          expected = rows.length > 0 ? NarInfo.parse(rows[0]!.text) : served
        } else {
          this.#log.info({ storePath: served.storePath, narHash }, 'NAR URL names a NarHash its store path no longer has')
        }
      }
    }
    if (expected === undefined) return undefined
    const narInfo = expected
    const identity = { narHash: narInfo.narHash, narSize: narInfo.narSize, storePath: narInfo.storePath }
    return {
      identity,
      open: async (start, end, signal) => {
        const reader = await this.#nars.open(identity, narInfo, rows, start, end, signal)
        if (reader === undefined) this.#dropNarInfos(narHash, narInfo.storePath)
        return reader
      }
    }
  }

  /** Every source said the NAR is absent: its narinfos must not be served for the rest of their TTL. */
  #dropNarInfos (narHash: string, storePath: string): void {
    const dropped = this.#cache.dropByNarHash(narHash)
    for (const hashPart of dropped) this.#answers.delete(hashPart)
    this.#log.warn({ storePath, narHash, dropped: dropped.length }, 'no source has the NAR any more: its narinfos are dropped from the cache')
  }

  /** A side file (side-files.ts) from the upstreams, by priority; undefined when none has it. */
  async sideFile (kind: SideFileKind, path: string, signal?: AbortSignal): Promise<SideFile | undefined> {
    return await openSideFile(this.#byPriority, kind, path, signal)
  }

  /** Stops the NAR fetches in progress (shutdown). */
  abortFetches (): void {
    this.#nars.abortAll()
  }
}

const ABSENT: NarInfoResponse = { kind: 'absent' }

function found (narInfo: NarInfo): NarInfoFound {
  return { kind: 'found', narInfo, body: rewrite(narInfo, 'none') }
}

/**
 * The narinfo as served: our own URL, everything signed kept as it was. Uncompressed, the file is
 * the NAR (FileHash and FileSize are the NarHash and NarSize). As zstd, the stream's hash and size
 * depend on how the store keeps the NAR when it is sent, so they are left out: no client checks
 * them, and both are optional.
 */
export function rewrite (narInfo: NarInfo, compression: 'none' | 'zstd'): Buffer {
  return Buffer.from(narInfo.withTransport(compression === 'none'
    ? { url: narUrl(narInfo, 'none'), compression, fileHash: narInfo.narHash, fileSize: narInfo.narSize }
    : { url: narUrl(narInfo, 'zstd'), compression }).toString())
}

/**
 * `nar/<nix32 narHash>.nar[.zst]?hash=<hash part>`. Nix 2.8 joins a relative URL to the cache URL
 * by concatenation and keeps the query string; newer Nix resolves it as RFC 3986 does, same result.
 */
export function narUrl (narInfo: NarInfo, compression: 'none' | 'zstd' = 'none'): string {
  return `${narFileName(narInfo.narHash, compression)}?hash=${narInfo.hashPart}`
}

/** Untrusted sources' time to complete a NAR before the upstreams start too (`untrusted-budget`). */
export const DEFAULT_UNTRUSTED_BUDGET = 20_000
