/**
 * One fetch of one NAR, shared by every request for it while it runs (single flight by NarHash):
 * one source read, one decompression, one hash, one ingest into the chunk store, however many
 * requests (Nix's, peers') arrive meanwhile. The bytes go to a spool file that every request
 * tails at its own offset, so a follower gets bytes as the fetch progresses, never more than the
 * fetch may release, and memory does not grow with the number of readers.
 *
 * What may be released, and when, depends on whom the bytes come from:
 * - untrusted sources (index locators: mirrors, file, S3, IPFS, BitTorrent, exec; and store
 *   fillers: LAN peers) release nothing until the whole NAR matched NarHash and NarSize; a bad
 *   copy reaches no one and its source is marked bad for this NAR;
 * - an upstream (the signer's own cache) streams through as it verifies, holding back its last
 *   chunk until the hash matched (`verifyNar`), as a direct relay would.
 * Untrusted sources go first. If none has completed within `untrustedBudget` (or all failed),
 * the upstreams start too, so Nix never waits on a slow peer or mirror for longer than that;
 * the first complete verified copy wins and every other attempt is stopped.
 *
 * Outcome: `open` resolves with a reader once bytes are coming, undefined when every source said
 * absent; it rejects when none delivered and one failed: with the StorageError when a spool could
 * not be written (the sources are not at fault, and a relay without storage may still answer),
 * else with an UpstreamError. A source that stays silent is never taken for absent.
 */
import { FormatError, IntegrityError, StorageError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { decompress } from '../nix/compression.ts'
import { race, type RaceCandidate, type RaceWinner } from '../backend/race.ts'
import type { SourceScores } from '../backend/scores.ts'
import type { SourceHealth } from '../upstream/health.ts'
import type { ChunkStore, NarCopy, NarIdentity, StoreFiller } from '../chunk/types.ts'
import { giveBack } from '../util/byte-pool.ts'
import { verifyNar } from '../util/verify.ts'
import { Spool, spoolReads } from './spool.ts'
import { SharedNar, type NarReader, type Published } from './shared-nar.ts'

export interface NarFetchSources {
  /** Index locators, opened by their backends: untrusted. */
  untrusted: (signal: AbortSignal) => Promise<RaceCandidate[]>
  /** LAN peers and the like, which fill the store themselves: untrusted. */
  fillers: readonly StoreFiller[]
  /** The upstreams, best first: the only sources whose bytes may stream through before their end. */
  upstreams: RaceCandidate[]
  /** The compressed size, a hint for the decoder. */
  fileSize?: number
}

export interface NarFetchContext {
  store?: ChunkStore
  spoolDir: string
  log: Logger
  health: SourceHealth
  scores: SourceScores
  hedgeDelay: number
  firstByteTimeout: number
  /** Milliseconds untrusted sources get to complete before the upstreams start too. */
  untrustedBudget: number
  /** Called for every source whose bytes failed verification (metrics). */
  integrityFailed?: (source: string) => void
  /** Called for every local storage failure (spool, store); the fetch goes on without it. */
  storageFailed: (err: StorageError, where: 'spool' | 'store') => void
}

/** How an attempt's spool stands, for the store that tails it. */
interface SpoolState { done: boolean, error?: unknown }

export class NarFetch {
  readonly identity: NarIdentity
  /** Settles when every attempt, and the winner's commit to the store, has ended. */
  readonly done: Promise<void>
  readonly #shared: SharedNar
  readonly #ctx: NarFetchContext
  readonly #sources: NarFetchSources
  readonly #what: string
  readonly #abort = new AbortController()
  readonly #attempts = new Set<AbortController>()
  readonly #outcomes: Array<Error | 'absent'> = []
  /** The first spool failure: it, not the sources, is why the fetch failed. */
  #spoolFailure: StorageError | undefined
  /** The winning copy's commit to the store. */
  #committed: Promise<void> | undefined

  constructor (identity: NarIdentity, sources: NarFetchSources, ctx: NarFetchContext) {
    this.identity = identity
    this.#sources = sources
    this.#ctx = ctx
    this.#shared = new SharedNar(identity, ctx.store)
    this.#what = this.#shared.what
    this.done = this.#run().catch((err: unknown) => { this.#fail(err as Error) }).finally(() => this.#shared.finish())
  }

  /** Attaches a reader of bytes [start, end); undefined when no source has the NAR. */
  async open (start: number, end: number, signal?: AbortSignal): Promise<NarReader | undefined> {
    return await this.#shared.open(start, end, signal)
  }

  /** Stops every attempt (shutdown). */
  abort (reason: Error): void {
    this.#abort.abort(reason)
  }

  get #settled (): boolean { return this.#shared.complete || this.#shared.failed }

  async #run (): Promise<void> {
    const untrusted = this.#untrustedPhase().then(() => true)
    await this.#within(untrusted)
    // Without a spool no copy can be kept: opening the upstreams would only fail the same way.
    if (!this.#settled && !this.#abort.signal.aborted && this.#spoolFailure === undefined) {
      this.#ctx.log.debug({ storePath: this.identity.storePath }, 'NAR: the upstreams start')
      await this.#raceLoop(true)
      // The upstreams are done; untrusted sources still at work get one more budget.
      if (!this.#settled && !await this.#within(untrusted)) {
        const late = new UpstreamError('sources', `${this.#what}: untrusted sources still busy after the upstreams gave up`, { timeout: true })
        this.#outcomes.push(late)
        for (const attempt of this.#attempts) attempt.abort(late)
      }
    }
    if (this.#settled) {
      await this.#committed
      return
    }
    this.#abort.signal.throwIfAborted()
    const errors = this.#outcomes.filter((o): o is Error => o !== 'absent')
    if (errors.length === 0) {
      this.#shared.start(false)
      return
    }
    if (this.#spoolFailure !== undefined) throw this.#spoolFailure
    throw new UpstreamError('sources', `${this.#what}: no source delivered: ${errors.map(e => e.message).join('; ')}`, {
      cause: new AggregateError(errors), timeout: errors.every(e => e instanceof UpstreamError && e.timeout)
    })
  }

  /** Whether `work` ended within one untrusted budget. */
  async #within (work: Promise<boolean>): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), this.#ctx.untrustedBudget) })
    try {
      return await Promise.race([work, expired])
    } finally {
      clearTimeout(timer)
    }
  }

  async #untrustedPhase (): Promise<void> {
    const { store } = this.#ctx
    const fillers = store === undefined ? [] : this.#sources.fillers.map(async filler => await this.#fill(filler, store))
    await Promise.all([...fillers, this.#raceLoop(false)])
  }

  /** Races the candidates of one kind, consumes the winner; on a failed winner, races the rest. */
  async #raceLoop (trusted: boolean): Promise<void> {
    const narHash = this.identity.narHash.toNix32()
    let candidates: RaceCandidate[]
    const attempt = this.#newAttempt()
    try {
      candidates = trusted ? this.#sources.upstreams : await this.#sources.untrusted(attempt.signal)
    } catch (err) {
      this.#endAttempt(attempt, err as Error)
      return
    }
    const usable = candidates.filter(c => !this.#ctx.health.isBadFor(c.name, narHash))
    if (usable.length < candidates.length && usable.length === 0) {
      this.#outcomes.push(new UpstreamError('sources', `every ${trusted ? 'upstream' : 'index source'} of ${this.#what} delivered bytes that do not match its NarHash`))
    }
    candidates = usable
    while (candidates.length > 0 && !this.#settled && !attempt.signal.aborted) {
      let winner: RaceWinner | undefined
      try {
        winner = await race(candidates, {
          scores: this.#ctx.scores, hedgeDelay: this.#ctx.hedgeDelay, firstByteTimeout: this.#ctx.firstByteTimeout,
          signal: attempt.signal, rank: false
        })
      } catch (err) {
        this.#endAttempt(attempt, err as Error)
        return
      }
      if (winner === undefined) {
        this.#outcomes.push('absent')
        break
      }
      this.#shared.start(true)
      try {
        await this.#consume(winner, trusted, attempt)
        return
      } catch (err) {
        if (attempt.signal.aborted) break
        this.#outcomes.push(err as Error)
        if (err instanceof StorageError) break
        candidates = candidates.filter(c => c.name !== winner.name)
      }
    }
    this.#endAttempt(attempt)
  }

  /**
   * A filler's fetch into the store. It copies the NAR into a spool as it verifies it, so the
   * NAR goes out from there, as an index source's does, rather than being read back from the
   * store chunk by chunk (decompressed and hashed again); from the store when the copy fell short.
   */
  async #fill (filler: StoreFiller, store: ChunkStore): Promise<void> {
    const attempt = this.#newAttempt()
    let copy: Spool | undefined
    const newCopy = async (): Promise<NarCopy> => {
      if (copy !== undefined) this.#shared.drop(copy)
      const spool = copy = await this.#newSpool()
      return { append: async pieces => await spool.appendInPool(pieces) }
    }
    try {
      const filled = await filler.fill(this.identity, store, { signal: attempt.signal, newCopy })
      if (filled && store.manifest(this.identity.narHash) !== undefined) {
        const source = filler.name
        if (copy !== undefined && copy.size === this.identity.narSize) this.#completeWith({ kind: 'spool', spool: copy, available: copy.size, source }, attempt)
        else {
          if (copy !== undefined) this.#shared.drop(copy)
          this.#completeWith({ kind: 'store', source }, attempt)
        }
      } else if (!filled) this.#outcomes.push('absent')
      this.#endAttempt(attempt)
    } catch (err) {
      if (err instanceof StorageError) this.#ctx.storageFailed(err, 'store')
      this.#endAttempt(attempt, err as Error)
    }
  }

  /**
   * Reads the winner to its end through `verifyNar` into a spool and the store. An upstream's
   * verified prefix is released as it grows; anything else is released when complete.
   */
  async #consume ({ name, source }: RaceWinner, trusted: boolean, attempt: AbortController): Promise<void> {
    const signal = attempt.signal
    const spool = await this.#newSpool()
    const state: SpoolState = { done: false }
    const committed = this.#ingest(spool, state)
    let streamed = false
    try {
      const what = `${this.#what} from ${name}`
      const sizeHint = source.fileSize ?? this.#sources.fileSize
      for await (const chunk of verifyNar(decompress(source.compression, source.body, { signal, sizeHint }), this.identity, what)) {
        await spool.append(chunk)
        const published = this.#shared.published
        if (trusted && (published === undefined || (published.kind === 'spool' && published.spool === spool))) {
          this.#shared.stream({ kind: 'spool', spool, available: spool.size, source: name })
          streamed = true
        } else this.#shared.changed()
      }
      state.done = true
      if (this.#completeWith({ kind: 'spool', spool, available: spool.size, source: name }, attempt)) this.#committed = committed
      await committed
    } catch (err) {
      state.error = err
      this.#shared.changed()
      if (err instanceof IntegrityError || err instanceof FormatError) {
        this.#ctx.health.markBad(name, this.identity.narHash.toNix32())
        this.#ctx.scores.integrityFailure(name)
        this.#ctx.integrityFailed?.(name)
        this.#ctx.log.error({ storePath: this.identity.storePath, narHash: this.identity.narHash.toString(), source: name, err: (err as Error).message },
          streamed ? 'NAR failed verification; response aborted, source marked bad' : 'NAR failed verification before release; source marked bad')
      } else if (err instanceof StorageError) this.#spoolFailed(err)
      // Bytes of this copy went out: no other copy may continue them (and readers may still be
      // reading this spool, so it stays until the fetch ends).
      if (streamed) this.#fail(err as Error)
      else this.#shared.drop(spool)
      throw err
    }
  }

  /**
   * Feeds the chunk store, if any, from the spool as it grows: the store works at its own pace
   * without slowing the fetch or its readers, and one that cannot take the NAR only costs the
   * caching. Resolves (never rejects) once the store committed the NAR or gave up.
   */
  async #ingest (spool: Spool, state: SpoolState): Promise<void> {
    const { store } = this.#ctx
    // A store that keeps nothing (`cache-size = 0`) would only evict the NAR again; peers still fill it.
    if (store === undefined || store.capacity === 0) return
    try {
      // The tail ends normally only once verifyNar matched the whole NAR.
      await store.ingest(this.identity, this.#tail(spool, state), { signal: this.#abort.signal, narHashChecked: true })
      this.#ctx.log.debug({ storePath: this.identity.storePath }, 'NAR committed to the store')
    } catch (err) {
      if (err instanceof StorageError) this.#ctx.storageFailed(err, 'store')
      else if (state.error === undefined) this.#ctx.log.warn({ storePath: this.identity.storePath, err: (err as Error).message }, 'NAR not committed to the store')
    }
  }

  /** Everything appended to `spool`, as it is appended; throws the attempt's error. */
  async * #tail (spool: Spool, state: SpoolState): AsyncGenerator<Uint8Array> {
    let position = 0
    for (;;) {
      if (state.error !== undefined) throw state.error
      if (position < spool.size) {
        const bytes = await spool.read(position, Infinity, spoolReads)
        position += bytes.length
        // The store is done with a piece when it asks for the next (ChunkStore.ingest).
        yield bytes
        giveBack(bytes)
        continue
      }
      if (state.done) return
      await this.#shared.wait()
    }
  }

  async #newSpool (): Promise<Spool> {
    try {
      const spool = await Spool.create(this.#ctx.spoolDir)
      this.#shared.adopt(spool)
      return spool
    } catch (err) {
      if (err instanceof StorageError) this.#spoolFailed(err)
      throw err
    }
  }

  #spoolFailed (err: StorageError): void {
    this.#spoolFailure ??= err
    this.#ctx.storageFailed(err, 'spool')
  }

  /** True when this is the first complete copy; every other attempt is then stopped. */
  #completeWith (published: Published, winner: AbortController): boolean {
    if (!this.#shared.completeWith(published)) return false
    for (const attempt of this.#attempts) if (attempt !== winner) attempt.abort(new Error('another source completed the NAR'))
    return true
  }

  #fail (err: Error): void {
    if (this.#shared.complete) return
    for (const attempt of this.#attempts) attempt.abort(err)
    this.#shared.fail(err)
  }

  #newAttempt (): AbortController {
    const attempt = new AbortController()
    this.#abort.signal.addEventListener('abort', () => attempt.abort(this.#abort.signal.reason), { once: true })
    this.#attempts.add(attempt)
    return attempt
  }

  #endAttempt (attempt: AbortController, err?: Error): void {
    this.#attempts.delete(attempt)
    if (err !== undefined && !attempt.signal.aborted) this.#outcomes.push(err)
  }
}
