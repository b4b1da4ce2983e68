/**
 * Announces (DHT "provide") the root CIDs of published NARs, rate-limited and batched: roots wait
 * in a queue (duplicates collapse) and go out `batch` at a time, one batch every `interval`, so a
 * publisher of ten thousand NARs does not flood the DHT. Only roots are announced, like kubo's
 * "roots" strategy: a fetcher that finds a provider of the root asks the same peer for the rest.
 * A failed announcement is logged and dropped; the next publish of that NAR queues it again.
 */
import type { CID } from 'multiformats/cid'
import type { Logger } from '../../log.ts'

export type Provide = (cid: CID, options: { signal: AbortSignal }) => Promise<void>

export class Announcer {
  readonly #provide: Provide
  readonly #batch: number
  readonly #interval: number
  readonly #log: Logger
  readonly #queue = new Map<string, CID>()
  readonly #controller = new AbortController()
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #last = -Infinity
  /** Roots announced successfully, since start. */
  announced = 0

  constructor (provide: Provide, options: { batch: number, interval: number, log: Logger }) {
    this.#provide = provide
    this.#batch = options.batch
    this.#interval = options.interval
    this.#log = options.log
  }

  /** Queues a root for announcement. */
  add (cid: CID): void {
    if (this.#controller.signal.aborted) return
    this.#queue.set(cid.toString(), cid)
    // At most one batch per interval, also when roots trickle in one at a time.
    this.#timer ??= setTimeout(() => { this.#running = this.#flush() }, Math.max(0, this.#last + this.#interval - Date.now()))
    this.#timer.unref()
  }

  get pending (): number { return this.#queue.size }

  async #flush (): Promise<void> {
    this.#last = Date.now()
    const batch = [...this.#queue.entries()].slice(0, this.#batch)
    for (const [key] of batch) this.#queue.delete(key)
    await Promise.all(batch.map(async ([key, cid]) => {
      try {
        await this.#provide(cid, { signal: this.#controller.signal })
        this.announced++
        this.#log.debug({ cid: key }, 'ipfs root announced')
      } catch (err) {
        if (!this.#controller.signal.aborted) this.#log.warn({ cid: key, err: (err as Error).message }, 'ipfs announcement failed')
      }
    }))
    this.#timer = this.#queue.size > 0 && !this.#controller.signal.aborted
      ? setTimeout(() => { this.#running = this.#flush() }, this.#interval)
      : undefined
    this.#timer?.unref()
  }

  /** Drops what is queued and stops announcing. */
  async close (): Promise<void> {
    this.#controller.abort(new Error('closing'))
    clearTimeout(this.#timer)
    this.#queue.clear()
    await this.#running
  }
}
