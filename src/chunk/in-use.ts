/**
 * What the chunk store must not remove while it is in use, in this process: NARs being rendered
 * or just committed (leases, by NarHash) and chunks that a NAR in flight needs (holds, by chunk
 * id). Both are counts. When the last lease of a NAR ends, eviction gets another look, since it
 * may have skipped that NAR.
 */
export class InUse {
  readonly #leases = new Map<string, number>()
  readonly #holds = new Map<string, number>()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #onReleased: () => void
  #closed = false

  constructor (onReleased: () => void) {
    this.#onReleased = onReleased
  }

  leased (narHex: string): boolean { return this.#leases.has(narHex) }
  held (chunkHex: string): boolean { return this.#holds.has(chunkHex) }

  /** Marks a NAR in use (safe from eviction) until the returned function is called. */
  lease (narHex: string): () => void {
    this.#leases.set(narHex, (this.#leases.get(narHex) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.#leases.get(narHex) ?? 1) - 1
      if (n > 0) { this.#leases.set(narHex, n); return }
      this.#leases.delete(narHex)
      if (!this.#closed) this.#onReleased()
    }
  }

  /**
   * A lease that ends by itself after `ms` unless `keep` is called first; `keep` returns the
   * function that ends it (a fresh lease if the first one had already run out).
   */
  leaseFor (narHex: string, ms: number): { keep: () => () => void } {
    const release = this.lease(narHex)
    let expired = false
    const timer = setTimeout(() => { this.#timers.delete(timer); expired = true; release() }, ms).unref()
    this.#timers.add(timer)
    return {
      keep: () => {
        clearTimeout(timer)
        this.#timers.delete(timer)
        return expired ? this.lease(narHex) : release
      }
    }
  }

  hold (chunkHex: string): void { this.#holds.set(chunkHex, (this.#holds.get(chunkHex) ?? 0) + 1) }

  unhold (chunkHex: string): void {
    const n = (this.#holds.get(chunkHex) ?? 1) - 1
    if (n <= 0) this.#holds.delete(chunkHex)
    else this.#holds.set(chunkHex, n)
  }

  close (): void {
    this.#closed = true
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
  }
}
