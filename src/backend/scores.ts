/**
 * What narswarm has learnt about each NAR source (a backend at a locator's host, a mirror, an
 * upstream): how fast it starts delivering (exponentially weighted time to first byte), how often
 * it fails, and whether it ever delivered bytes that did not match a NarHash. The race orders its
 * candidates by this score, best first, so the next race starts with the source most likely to
 * win. Integrity failures weigh far more than slowness: an honest slow source beats a fast liar.
 */
export interface SourceStats {
  /** Smoothed time to first byte, ms; undefined until measured. */
  ttfb?: number
  failures: number
  integrityFailures: number
}

const ALPHA = 0.3
const UNKNOWN_TTFB = 200
const FAILURE_PENALTY = 1_000
const INTEGRITY_PENALTY = 1_000_000

export class SourceScores {
  readonly #stats = new Map<string, SourceStats>()

  #get (source: string): SourceStats {
    let s = this.#stats.get(source)
    if (s === undefined) { s = { failures: 0, integrityFailures: 0 }; this.#stats.set(source, s) }
    return s
  }

  firstByte (source: string, ms: number): void {
    const s = this.#get(source)
    s.ttfb = s.ttfb === undefined ? ms : ALPHA * ms + (1 - ALPHA) * s.ttfb
    // A source that works again earns its way back, one success per failure.
    if (s.failures > 0) s.failures--
  }

  failure (source: string): void { this.#get(source).failures++ }

  integrityFailure (source: string): void { this.#get(source).integrityFailures++ }

  /** Lower is better. */
  score (source: string): number {
    const s = this.#stats.get(source)
    if (s === undefined) return UNKNOWN_TTFB
    return (s.ttfb ?? UNKNOWN_TTFB) + s.failures * FAILURE_PENALTY + s.integrityFailures * INTEGRITY_PENALTY
  }

  /** `items` sorted best first by the score of `nameOf(item)`; ties keep their order. */
  rank<T> (items: readonly T[], nameOf: (item: T) => string): T[] {
    return items.map((item, i) => ({ item, i, score: this.score(nameOf(item)) }))
      .sort((a, b) => a.score - b.score || a.i - b.i)
      .map(x => x.item)
  }
}
