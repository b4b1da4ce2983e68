/**
 * A small least-recently-used map with per-entry expiry, on top of Map's insertion order.
 */
export class ExpiringLru<K, V> {
  readonly #max: number
  readonly #now: () => number
  readonly #map = new Map<K, { value: V, expiresAt: number }>()

  constructor (max: number, now: () => number = Date.now) {
    this.#max = max
    this.#now = now
  }

  get (key: K): V | undefined {
    const entry = this.#map.get(key)
    if (entry === undefined) return undefined
    this.#map.delete(key)
    if (entry.expiresAt <= this.#now()) return undefined
    this.#map.set(key, entry)
    return entry.value
  }

  set (key: K, value: V, expiresAt: number): void {
    this.#map.delete(key)
    this.#map.set(key, { value, expiresAt })
    if (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as K)
  }

  delete (key: K): void {
    this.#map.delete(key)
  }

  get size (): number { return this.#map.size }
}
