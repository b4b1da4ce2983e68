/**
 * The substituter's logic, free of HTTP: answer a narinfo request and open a verified NAR.
 *
 * Narinfo: the SQLite cache first, else every upstream (see `queryNarInfo`). What Nix gets is the
 * upstream's narinfo with only URL/Compression/FileHash/FileSize rewritten (signatures do not cover
 * them) to point at our own uncompressed, NarHash-addressed URL `nar/<nix32 narHash>.nar`; every
 * other line, every `Sig` included, is kept byte for byte.
 *
 * NAR: found through the NarHash index of the cache, fetched from the upstream that vouched for it
 * (then the others), decompressed, and passed through `verifyNar`, so what leaves here is either
 * the exact signed bytes or a stream that fails before its end.
 */
import { IntegrityError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { decompress } from '../nix/compression.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import type { SourceHealth } from '../upstream/health.ts'
import type { Upstream } from '../upstream/upstream.ts'
import { queryNarInfo } from '../upstream/upstreams.ts'
import { ExpiringLru } from '../util/lru.ts'
import { verifyNar } from '../util/verify.ts'

export type NarInfoResponse =
  | { kind: 'found', body: Buffer }
  | { kind: 'absent' }
  | { kind: 'failed', error: UpstreamError }

export interface OpenedNar {
  narInfo: NarInfo
  /** Verified bytes: the stream throws IntegrityError instead of completing if they are wrong. */
  body: AsyncIterable<Uint8Array>
  source: string
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
}

export class Substituter {
  readonly #upstreams: Upstream[]
  readonly #byName: Map<string, Upstream>
  readonly #cache: NarInfoCache
  readonly #health: SourceHealth
  readonly #log: Logger
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
  }

  /** The narinfo to serve for `hashPart` (already validated as 32 nix32 characters). */
  async narInfo (hashPart: string): Promise<NarInfoResponse> {
    const answer = this.#answers.get(hashPart)
    if (answer !== undefined) return answer
    const cached = this.#cache.get(hashPart)
    if (cached !== undefined) {
      return this.#remember(hashPart, cached.present ? { kind: 'found', body: rewrite(NarInfo.parse(cached.text)) } : ABSENT, cached.expiresAt)
    }
    let pending = this.#inFlight.get(hashPart)
    if (pending === undefined) {
      pending = this.#fetchNarInfo(hashPart).finally(() => this.#inFlight.delete(hashPart))
      this.#inFlight.set(hashPart, pending)
    }
    return await pending
  }

  async #fetchNarInfo (hashPart: string): Promise<NarInfoResponse> {
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
    return { narInfo: NarInfo.parse(rows[0]!.text), open: signal => this.#openNar(narHash, rows, signal) }
  }

  /**
   * Opens the NAR from the best source: undefined when every source says it is gone; throws
   * UpstreamError when sources failed or all are known bad.
   */
  async #openNar (narHash: string, rows: Array<{ text: string, upstream: string }>, signal?: AbortSignal): Promise<OpenedNar | undefined> {
    const errors: UpstreamError[] = []
    let skipped = 0
    for await (const { upstream, narInfo } of this.#sources(rows, signal)) {
      if (this.#health.isBadFor(upstream.name, narHash)) { skipped++; continue }
      try {
        const stream = await upstream.openNar(narInfo, { signal })
        if (stream === undefined) {
          this.#log.warn({ upstream: upstream.name, storePath: narInfo.storePath }, 'upstream no longer has the NAR')
          continue
        }
        const what = `NAR of ${narInfo.storePath} from ${upstream.name}`
        const verified = verifyNar(decompress(stream.compression, stream.body, { signal, sizeHint: stream.fileSize ?? narInfo.fileSize }), narInfo, what)
        return { narInfo, source: upstream.name, body: this.#guard(verified, upstream.name, narInfo) }
      } catch (err) {
        if (signal?.aborted === true) throw err
        const error = err instanceof UpstreamError ? err : new UpstreamError(upstream.name, (err as Error).message, { cause: err })
        this.#log.warn({ upstream: upstream.name, storePath: narInfo.storePath, err: error.message }, 'opening NAR failed')
        errors.push(error)
      }
    }
    if (skipped > 0) errors.push(new UpstreamError('upstreams', `${skipped} source(s) of NAR ${narHash} skipped: they delivered bytes that do not match its NarHash`))
    if (errors.length === 0) return undefined
    throw errors.length === 1 ? errors[0]! : new UpstreamError('upstreams', errors.map(e => e.message).join('; '))
  }

  /**
   * Sources of a NAR, best first: the upstreams whose narinfo we hold (sources on probation after
   * the others, then by priority), then — asked only if those fail — every other upstream that has
   * a narinfo for the same path with the same NarHash.
   */
  async * #sources (rows: Array<{ text: string, upstream: string }>, signal?: AbortSignal): AsyncGenerator<{ upstream: Upstream, narInfo: NarInfo }> {
    const rank = (u: Upstream): number => (this.#health.onProbation(u.name) ? 1 : 0)
    const byPreference = (a: Upstream, b: Upstream): number => rank(a) - rank(b) || a.priority - b.priority
    const known = rows.flatMap(r => {
      const upstream = this.#byName.get(r.upstream)
      return upstream === undefined ? [] : [{ upstream, narInfo: NarInfo.parse(r.text) }]
    }).sort((a, b) => byPreference(a.upstream, b.upstream))
    yield * known
    const expected = NarInfo.parse(rows[0]!.text)
    const asked = new Set(known.map(k => k.upstream))
    for (const upstream of [...this.#upstreams].sort(byPreference)) {
      if (asked.has(upstream)) continue
      try {
        const answer = await upstream.fetchNarInfo(expected.hashPart, { signal })
        if (answer.kind === 'found' && answer.narInfo.narHash.equals(expected.narHash) && answer.narInfo.narSize === expected.narSize) {
          yield { upstream, narInfo: answer.narInfo }
        }
      } catch (err) {
        if (signal?.aborted === true) throw err
        this.#log.debug({ upstream: upstream.name, err: (err as Error).message }, 'alternative NAR source unavailable')
      }
    }
  }

  /** Marks the source bad and logs when the bytes fail verification; rethrows either way. */
  async * #guard (body: AsyncIterable<Uint8Array>, source: string, narInfo: NarInfo): AsyncGenerator<Uint8Array> {
    try {
      yield * body
    } catch (err) {
      if (err instanceof IntegrityError || (err as Error).name === 'FormatError') {
        this.#health.markBad(source, narInfo.narHash.toNix32())
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
    url: `nar/${narInfo.narHash.toNix32()}.nar`,
    compression: 'none',
    fileHash: narInfo.narHash,
    fileSize: narInfo.narSize
  }).toString())
}
