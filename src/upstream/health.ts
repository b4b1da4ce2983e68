/**
 * What narswarm remembers about sources that misbehaved. A source that delivered bytes not
 * matching a NarHash is never used again for that NAR (it could be a hostile peer, or a corrupt
 * file on a mirror) and is put on probation for `cooldown`: while on probation it is tried only
 * after every source in good standing. Memory is bounded: the oldest verdicts are forgotten first.
 */
export class SourceHealth {
  readonly #cooldown: number
  readonly #maxEntries: number
  readonly #now: () => number
  /** `source\nnarHash`, oldest first. */
  readonly #badFor = new Set<string>()
  readonly #probationUntil = new Map<string, number>()

  constructor (init: { cooldown: number, maxEntries?: number, now?: () => number }) {
    this.#cooldown = init.cooldown
    this.#maxEntries = init.maxEntries ?? 100_000
    this.#now = init.now ?? Date.now
  }

  /** Records that `source` served bytes that do not match `narHash`. */
  markBad (source: string, narHash: string): void {
    const key = `${source}\n${narHash}`
    this.#badFor.delete(key)
    this.#badFor.add(key)
    if (this.#badFor.size > this.#maxEntries) this.#badFor.delete(this.#badFor.values().next().value!)
    this.#probationUntil.set(source, this.#now() + this.#cooldown)
  }

  isBadFor (source: string, narHash: string): boolean {
    return this.#badFor.has(`${source}\n${narHash}`)
  }

  onProbation (source: string): boolean {
    const until = this.#probationUntil.get(source)
    if (until === undefined) return false
    if (until > this.#now()) return true
    this.#probationUntil.delete(source)
    return false
  }
}
