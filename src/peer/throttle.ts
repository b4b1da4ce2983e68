/**
 * A token bucket for the peer listener's upload limit (`peer-upload-limit`, bytes per second),
 * shared by every answer, so the LAN can never take more of a home link than it was given. The
 * bucket holds at most one second of tokens; 0 means no limit.
 */
import { setTimeout as sleep } from 'node:timers/promises'

export class Throttle {
  readonly #rate: number
  #tokens: number
  #at = performance.now()

  constructor (bytesPerSecond: number) {
    this.#rate = bytesPerSecond
    this.#tokens = bytesPerSecond
  }

  /** Waits until `bytes` may be sent. */
  async take (bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.#rate <= 0) return
    const now = performance.now()
    this.#tokens = Math.min(this.#rate, this.#tokens + (now - this.#at) * this.#rate / 1000)
    this.#at = now
    this.#tokens -= bytes
    if (this.#tokens < 0) await sleep(-this.#tokens * 1000 / this.#rate, undefined, { signal })
  }
}
