/**
 * What the readers of one shared NAR fetch see (`NarFetch` decides what goes in): the copy that
 * may be read — a spool and how much of it is released, or the chunk store once a filler
 * committed the NAR — and whether the fetch completed, failed or found nothing. Each reader reads
 * at its own offset and waits when it has caught up, so a follower gets bytes as the fetch
 * progresses, never more than was released. Spools stay open while any reader may still read
 * them.
 */
import { raceSignal } from 'race-signal'
import { StorageError, UpstreamError } from '../errors.ts'
import type { ChunkStore, NarIdentity } from '../chunk/types.ts'
import { spoolReads, type Spool } from './spool.ts'
import { renderRange } from './store-range.ts'

export interface NarReader {
  body: AsyncIterable<Uint8Array>
  /** The source that delivered (known for sure once the body has ended). */
  source: () => string
  /** Detaches the reader; idempotent. Must be called whether or not the body was read. */
  close: () => void
}

export type Published =
  | { kind: 'spool', spool: Spool, available: number, source: string }
  | { kind: 'store', source: string }

export class SharedNar {
  readonly identity: NarIdentity
  readonly what: string
  /** True once bytes are coming, false when every source said absent; rejects on failure. */
  readonly ready: Promise<boolean>
  readonly #store: ChunkStore | undefined
  readonly #spools = new Set<Spool>()
  #waiters: Array<() => void> = []
  #published: Published | undefined
  #complete = false
  #failure: Error | undefined
  #finished = false
  #readers = 0
  #start!: (found: boolean) => void
  #reject!: (err: Error) => void

  constructor (identity: NarIdentity, store: ChunkStore | undefined) {
    this.identity = identity
    this.what = `NAR ${identity.storePath ?? identity.narHash.toString()}`
    this.#store = store
    this.ready = new Promise<boolean>((resolve, reject) => { this.#start = resolve; this.#reject = reject })
    this.ready.catch(() => {})
  }

  get published (): Published | undefined { return this.#published }
  get complete (): boolean { return this.#complete }
  get failed (): boolean { return this.#failure !== undefined }

  /** Bytes are coming (or, with false, no source has the NAR). Only the first call counts. */
  start (found: boolean): void { this.#start(found) }

  /** A spool of this fetch; closed when the fetch has ended and no reader is left. */
  adopt (spool: Spool): void { this.#spools.add(spool) }

  /** A spool no reader ever saw. */
  drop (spool: Spool): void {
    this.#spools.delete(spool)
    void spool.release()
  }

  /** Releases more of a streaming (trusted) copy. */
  stream (published: Published): void {
    if (this.#complete || this.#failure !== undefined) return
    this.#published = published
    this.changed()
  }

  /** The first complete verified copy; false when another came first or the fetch failed. */
  completeWith (published: Published): boolean {
    if (this.#complete || this.#failure !== undefined) return false
    this.#complete = true
    this.#published = published
    this.#start(true)
    this.changed()
    return true
  }

  fail (err: Error): void {
    if (this.#complete) return
    this.#failure ??= err
    this.#reject(err)
    this.changed()
  }

  /** Every attempt has ended. */
  finish (): void {
    this.#finished = true
    this.changed()
    if (this.#readers === 0) this.#releaseSpools()
  }

  /** Wakes every reader (and tail) waiting for a change. */
  changed (): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const wake of waiters) wake()
  }

  async wait (signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(signal!.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
    })
  }

  /** Attaches a reader of bytes [start, end); undefined when no source has the NAR. */
  async open (start: number, end: number, signal?: AbortSignal): Promise<NarReader | undefined> {
    this.#readers++
    let closed = false
    const close = (): void => {
      if (closed) return
      closed = true
      if (--this.#readers === 0 && this.#finished) this.#releaseSpools()
    }
    try {
      const found = await raceSignal(this.ready, signal)
      if (!found) { close(); return undefined }
    } catch (err) {
      close()
      throw err
    }
    const self = this
    const body = (async function * () {
      try { yield * self.#read(start, end, signal) } finally { close() }
    })()
    return { body, source: () => this.#published?.source ?? 'none', close }
  }

  async * #read (start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    let position = start
    // A range that stops short of the end keeps its last byte until the whole NAR verified.
    const partial = end < this.identity.narSize
    while (position < end) {
      signal?.throwIfAborted()
      if (this.#failure !== undefined) throw this.#failure
      const published = this.#published
      if (published?.kind === 'store') {
        const rest = this.#store === undefined ? undefined : renderRange(this.#store, this.identity.narHash, position, end, signal)
        if (rest === undefined) throw new StorageError(`${this.what} left the chunk store before it could be served`)
        yield * rest
        return
      }
      const limit = published === undefined ? position : this.#complete ? end : Math.min(published.available, partial ? end - 1 : end)
      if (limit > position) {
        const bytes = await published!.spool.read(position, limit - position, spoolReads)
        position += bytes.length
        yield bytes
        continue
      }
      if (this.#finished) throw new UpstreamError('sources', `${this.what}: no source completed it`)
      await this.wait(signal)
    }
  }

  #releaseSpools (): void {
    for (const spool of this.#spools) void spool.release()
    this.#spools.clear()
  }
}
