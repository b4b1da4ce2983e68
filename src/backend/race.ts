/**
 * The hedged race between the sources of one NAR. Candidates are tried best first (by
 * `SourceScores`); if the running ones have not delivered a first byte within `hedgeDelay`, the
 * next one starts too, and a candidate that fails or says "not here" makes room for the next at
 * once. The first to deliver a byte wins; every other is aborted. The winner's stream is returned
 * unverified: the caller passes it through `verifyNar`, and reports an integrity failure to the
 * scores, so a lying source loses every later race.
 *
 * Result: the winner; undefined when every candidate said "not here"; UpstreamError when none
 * delivered and at least one failed (a failure is never reported as absence).
 */
import { raceSignal } from 'race-signal'
import { UpstreamError } from '../errors.ts'
import type { NarSource } from '../types.ts'
import type { SourceScores } from './scores.ts'

export interface RaceCandidate {
  /** The source's name in scores and logs. */
  name: string
  open: (signal: AbortSignal) => Promise<NarSource | undefined>
}

export interface RaceOptions {
  scores: SourceScores
  /** Milliseconds without a first byte before the next candidate starts as well. */
  hedgeDelay: number
  /** Milliseconds a candidate may take to its first byte before it counts as failed. */
  firstByteTimeout: number
  signal?: AbortSignal
  /** False: keep the caller's order (it ranked the candidates itself). Default true. */
  rank?: boolean
}

export interface RaceWinner {
  name: string
  source: NarSource
}

type Outcome =
  | { kind: 'first-byte', index: number, source: NarSource, iterator: AsyncIterator<Uint8Array>, first: IteratorResult<Uint8Array> }
  | { kind: 'absent', index: number }
  | { kind: 'failed', index: number, error: Error }
  | { kind: 'hedge' }

export async function race (candidates: readonly RaceCandidate[], options: RaceOptions): Promise<RaceWinner | undefined> {
  const { scores, signal } = options
  signal?.throwIfAborted()
  const ordered = options.rank === false ? [...candidates] : scores.rank(candidates, c => c.name)
  const controllers: AbortController[] = []
  const running = new Map<number, Promise<Outcome>>()
  const errors: Error[] = []
  let next = 0

  const start = (): void => {
    const index = next++
    const candidate = ordered[index]!
    const controller = new AbortController()
    controllers[index] = controller
    // The winner's body stays tied to this signal, so the first-byte deadline is a timer that is
    // cleared once the byte arrives, not part of the signal.
    const deadline = setTimeout(() => controller.abort(new UpstreamError(candidate.name, `no first byte within ${options.firstByteTimeout} ms`, { timeout: true })), options.firstByteTimeout)
    const candidateSignal = signal === undefined ? controller.signal : AbortSignal.any([controller.signal, signal])
    const started = performance.now()
    running.set(index, (async (): Promise<Outcome> => {
      try {
        const source = await raceSignal(candidate.open(candidateSignal), candidateSignal)
        if (source === undefined) return { kind: 'absent', index }
        const iterator = source.body[Symbol.asyncIterator]()
        const first = await raceSignal(iterator.next(), candidateSignal)
        scores.firstByte(candidate.name, performance.now() - started)
        return { kind: 'first-byte', index, source, iterator, first }
      } catch (err) {
        return { kind: 'failed', index, error: err as Error }
      } finally {
        clearTimeout(deadline)
      }
    })())
  }

  let hedgeTimer: NodeJS.Timeout | undefined
  try {
    start()
    for (;;) {
      const hedge = next < ordered.length
        ? new Promise<Outcome>(resolve => { hedgeTimer = setTimeout(() => resolve({ kind: 'hedge' }), options.hedgeDelay) })
        : undefined
      const outcome = await Promise.race(hedge === undefined ? running.values() : [...running.values(), hedge])
      clearTimeout(hedgeTimer)
      signal?.throwIfAborted()
      if (outcome.kind === 'hedge') { start(); continue }
      running.delete(outcome.index)
      if (outcome.kind === 'first-byte') {
        for (const [i, pending] of running) {
          controllers[i]!.abort(new Error('another source won the race'))
          // A loser that got its first byte at the same moment must still close its stream.
          void pending.then(o => { if (o.kind === 'first-byte') void o.iterator.return?.()?.catch(() => {}) })
        }
        return { name: ordered[outcome.index]!.name, source: { ...outcome.source, body: resume(outcome.first, outcome.iterator) } }
      }
      if (outcome.kind === 'failed') {
        scores.failure(ordered[outcome.index]!.name)
        errors.push(outcome.error)
      }
      if (next < ordered.length) start()
      else if (running.size === 0) break
    }
  } finally {
    clearTimeout(hedgeTimer)
  }
  if (errors.length === 0) return undefined
  throw new UpstreamError('race', `no source delivered: ${errors.map(e => e.message).join('; ')}`, { cause: new AggregateError(errors) })
}

async function * resume (first: IteratorResult<Uint8Array>, iterator: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  let done = first.done === true
  try {
    if (!done) yield first.value
    while (!done) {
      const r = await iterator.next()
      done = r.done === true
      if (!done) yield r.value
    }
  } finally {
    if (!done) await iterator.return?.()
  }
}
