/**
 * The substituter's logic, free of HTTP: answer a narinfo request and open a verified NAR.
 *
 * Narinfo: the SQLite cache first, else the index (mappers that keep signed narinfos, checked
 * against the index keys), else every upstream (see `queryNarInfo`). What Nix gets is the
 * upstream's narinfo with only URL/Compression/FileHash/FileSize rewritten (signatures do not cover
 * them) to point at our own uncompressed, NarHash-addressed URL `nar/<nix32 narHash>.nar`; every
 * other line, every `Sig` included, is kept byte for byte.
 *
 * NAR: its narinfo is found through the NarHash index of the cache; its sources are raced (see
 * `race`): first every locator the mappers know (by NarHash, and by FileHash for indexes keyed the
 * nix-subsubd way), opened by the backend for the locator's scheme and ordered by learnt score; then
 * the upstreams, the upstream that vouched for the narinfo first. The winner's bytes are
 * decompressed and passed through `verifyNar`, so what leaves here is either the exact signed bytes
 * or a stream that fails before its end; a source whose bytes fail is never used for that NAR
 * again and loses every later race.
 */
import { FormatError, IntegrityError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { decompress, narFileName } from '../nix/compression.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import type { SourceHealth } from '../upstream/health.ts'
import { parseServedNarInfo, type Upstream } from '../upstream/upstream.ts'
import { queryNarInfo } from '../upstream/upstreams.ts'
import { ExpiringLru } from '../util/lru.ts'
import { verifyNar } from '../util/verify.ts'
import { race, type RaceCandidate } from '../backend/race.ts'
import { SourceScores } from '../backend/scores.ts'
import { trustedKeyMap, verifyNarInfo, type PublicKey } from '../nix/signature.ts'
import type { Backend, Mapper } from '../types.ts'
import type { NarInfoResult, Observer, SourceKind } from './observer.ts'

export type NarInfoResponse =
  | { kind: 'found', body: Buffer }
  | { kind: 'absent' }
  | { kind: 'failed', error: UpstreamError }

export interface OpenedNar {
  narInfo: NarInfo
  /** Verified bytes: the stream throws IntegrityError instead of completing if they are wrong. */
  body: AsyncIterable<Uint8Array>
  source: string
  kind: SourceKind
}

export interface NarHandle {
  narInfo: NarInfo
  open: (signal?: AbortSignal) => Promise<OpenedNar | undefined>
}

export interface SubstituterInit {
  upstreams: Upstream[]
  cache: NarInfoCache
  health: SourceHealth
  log: Logger
  mappers?: Mapper[]
  backends?: Backend[]
  /** Keys that make a narinfo from a mapper usable. */
  indexKeys?: string[]
  scores?: SourceScores
  hedgeDelay?: number
  firstByteTimeout?: number
  observer?: Observer
}

export class Substituter {
  readonly #upstreams: Upstream[]
  readonly #byName: Map<string, Upstream>
  readonly #cache: NarInfoCache
  readonly #health: SourceHealth
  readonly #log: Logger
  readonly #mappers: Mapper[]
  readonly #backends: Backend[]
  readonly #indexKeys: ReadonlyMap<string, PublicKey>
  readonly #scores: SourceScores
  readonly #hedgeDelay: number
  readonly #firstByteTimeout: number
  readonly #observer: Observer | undefined
  /** Rendered answers, so a hit costs neither SQLite nor a re-serialization; same expiry as the cache. */
  readonly #answers = new ExpiringLru<string, NarInfoResponse>(50_000)
  /** Concurrent requests for one hash part share one upstream query. */
  readonly #inFlight = new Map<string, Promise<NarInfoResponse>>()

  constructor (init: SubstituterInit) {
    this.#upstreams = init.upstreams
    this.#byName = new Map(init.upstreams.map(u => [u.name, u]))
    this.#cache = init.cache
    this.#health = init.health
    this.#log = init.log
    this.#mappers = init.mappers ?? []
    this.#backends = init.backends ?? []
    this.#indexKeys = trustedKeyMap(init.indexKeys ?? [])
    this.#scores = init.scores ?? new SourceScores()
    this.#hedgeDelay = init.hedgeDelay ?? 250
    this.#firstByteTimeout = init.firstByteTimeout ?? 30_000
    this.#observer = init.observer
  }

  /** The narinfo to serve for `hashPart` (already validated as 32 nix32 characters). */
  async narInfo (hashPart: string): Promise<NarInfoResponse> {
    const answer = this.#answers.get(hashPart)
    if (answer !== undefined) { this.#count('cache-hit'); return answer }
    const cached = this.#cache.get(hashPart)
    if (cached !== undefined) {
      this.#count('cache-hit')
      return this.#remember(hashPart, cached.present ? { kind: 'found', body: rewrite(NarInfo.parse(cached.text)) } : ABSENT, cached.expiresAt)
    }
    let pending = this.#inFlight.get(hashPart)
    if (pending === undefined) {
      pending = this.#fetchNarInfo(hashPart).finally(() => this.#inFlight.delete(hashPart))
      this.#inFlight.set(hashPart, pending)
    }
    const response = await pending
    this.#count(response.kind === 'found' ? 'fetched' : response.kind)
    return response
  }

  #count (result: NarInfoResult): void {
    this.#observer?.narInfo(result)
  }

  async #fetchNarInfo (hashPart: string): Promise<NarInfoResponse> {
    const indexed = await this.#narInfoFromIndex(hashPart)
    if (indexed !== undefined) {
      const expiresAt = this.#cache.putPresent(hashPart, indexed.narInfo.narHash.toNix32(), indexed.text, `index:${indexed.mapper}`)
      this.#log.debug({ mapper: indexed.mapper, storePath: indexed.narInfo.storePath }, 'narinfo from the index')
      return this.#remember(hashPart, { kind: 'found', body: rewrite(indexed.narInfo) }, expiresAt)
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
        return this.#remember(hashPart, { kind: 'found', body: rewrite(narInfo) }, expiresAt)
      }
      case 'absent':
        this.#log.debug({ hashPart, ms }, 'narinfo absent from every upstream')
        if (outcome.negativeCacheable) return this.#remember(hashPart, ABSENT, this.#cache.putAbsent(hashPart))
        return ABSENT
      case 'failed': {
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

  #remember (hashPart: string, answer: NarInfoResponse, expiresAt: number): NarInfoResponse {
    this.#answers.set(hashPart, answer, expiresAt)
    return answer
  }

  /**
   * The NAR with this NarHash (nix32): its narinfo, and a way to open it from the best source.
   * Undefined when no live narinfo names it.
   */
  findNar (narHash: string): NarHandle | undefined {
    const rows = this.#cache.findByNarHash(narHash)
    if (rows.length === 0) return undefined
    const narInfo = NarInfo.parse(rows[0]!.text)
    return { narInfo, open: signal => this.#openNar(narHash, narInfo, rows, signal) }
  }

  /**
   * Opens the NAR from the best source: undefined when every source says it is gone; throws
   * UpstreamError when sources failed or all are known bad.
   */
  async #openNar (narHash: string, expected: NarInfo, rows: Array<{ text: string, upstream: string }>, signal?: AbortSignal): Promise<OpenedNar | undefined> {
    const all = [...this.#scores.rank(await this.#indexCandidates(expected, signal), c => c.name), ...this.#upstreamCandidates(rows, expected)]
    const candidates = all.filter(c => !this.#health.isBadFor(c.name, narHash))
    if (candidates.length === 0) {
      throw new UpstreamError('sources', `every source of NAR ${narHash} delivered bytes that do not match its NarHash`)
    }
    const winner = await race(candidates, {
      scores: this.#scores, hedgeDelay: this.#hedgeDelay, firstByteTimeout: this.#firstByteTimeout, signal, rank: false
    })
    if (winner === undefined) {
      this.#log.warn({ storePath: expected.storePath }, 'no source has the NAR any more')
      return undefined
    }
    const { source, name } = winner
    const what = `NAR of ${expected.storePath} from ${name}`
    const verified = verifyNar(decompress(source.compression, source.body, { signal, sizeHint: source.fileSize ?? expected.fileSize }), expected, what)
    const kind: SourceKind = this.#byName.has(name) ? 'upstream' : 'backend'
    return { narInfo: expected, source: name, kind, body: this.#guard(verified, name, expected) }
  }

  /** Every locator the mappers know for this NAR, as race candidates of the backend for its scheme. */
  async #indexCandidates (expected: NarInfo, signal?: AbortSignal): Promise<RaceCandidate[]> {
    if (this.#mappers.length === 0 || this.#backends.length === 0) return []
    const keys = expected.fileHash === undefined ? [expected.narHash] : [expected.narHash, expected.fileHash]
    // Every lookup at once: they stand between Nix's request and the race's first byte.
    const lookups = await Promise.all(this.#mappers.flatMap(mapper => keys.map(async key => {
      try {
        return { mapper, locators: await mapper.lookup(key, { signal }) }
      } catch (err) {
        if (signal?.aborted === true) throw err
        this.#log.warn({ mapper: mapper.name, err: (err as Error).message }, 'index lookup failed')
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
        const backends = this.#backends.filter(b => b.schemes.includes(scheme))
        if (backends.length === 0) this.#log.debug({ mapper: mapper.name, scheme }, 'no backend for a locator scheme')
        for (const backend of backends) {
          candidates.push({ name: backend.name, open: async s => await backend.open(locator, { signal: s }) })
        }
      }
    }
    return candidates
  }

  /**
   * The upstreams as the last resort: those whose narinfo we hold first (sources on probation
   * after the others, then by priority), then every other upstream, which is asked for its narinfo
   * only when its turn in the race comes and counts only with the same NarHash.
   */
  #upstreamCandidates (rows: Array<{ text: string, upstream: string }>, expected: NarInfo): RaceCandidate[] {
    const rank = (u: Upstream): number => (this.#health.onProbation(u.name) ? 1 : 0)
    const byPreference = (a: Upstream, b: Upstream): number => rank(a) - rank(b) || a.priority - b.priority
    const known = rows.flatMap((r, i) => {
      const upstream = this.#byName.get(r.upstream)
      return upstream === undefined ? [] : [{ upstream, narInfo: i === 0 ? expected : NarInfo.parse(r.text) }]
    }).sort((a, b) => byPreference(a.upstream, b.upstream))
    const asked = new Set(known.map(k => k.upstream))
    const others = [...this.#upstreams].sort(byPreference).filter(u => !asked.has(u))
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
        this.#health.markBad(source, narInfo.narHash.toNix32())
        this.#scores.integrityFailure(source)
        this.#observer?.verificationFailed(source)
        this.#log.error({ storePath: narInfo.storePath, narHash: narInfo.narHash.toString(), source, err: (err as Error).message },
          'NAR failed verification; response aborted, source marked bad')
      }
      throw err
    }
  }
}

const ABSENT: NarInfoResponse = { kind: 'absent' }

/** The narinfo as served: our own URL, uncompressed, everything signed kept as it was. */
export function rewrite (narInfo: NarInfo): Buffer {
  return Buffer.from(narInfo.withTransport({
    url: narFileName(narInfo.narHash, 'none'),
    compression: 'none',
    fileHash: narInfo.narHash,
    fileSize: narInfo.narSize
  }).toString())
}
