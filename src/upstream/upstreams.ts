/**
 * Asking several upstreams at once. Every upstream is asked in parallel; among those that have a
 * usable narinfo, the one with the best (lowest) priority wins, and a lower-priority answer is
 * taken as soon as every better-priority upstream has answered without one. Equal priorities:
 * the first valid answer wins.
 *
 * The outcome keeps Nix's distinction between "absent" and "could not find out": `absent` only
 * when no upstream failed; `negativeCacheable` only when every upstream said 404/403/410 (an
 * upstream that served an unusable narinfo did answer, but its answer is not a fact worth caching).
 */
import { UpstreamError } from '../errors.ts'
import type { NarInfo } from '../nix/narinfo.ts'
import type { Logger } from '../log.ts'
import type { NarInfoAnswer, Upstream } from './upstream.ts'

export type NarInfoOutcome =
  | { kind: 'found', upstream: Upstream, narInfo: NarInfo, text: string }
  | { kind: 'absent', negativeCacheable: boolean }
  | { kind: 'failed', errors: UpstreamError[] }

type Settled = { upstream: Upstream, answer: NarInfoAnswer } | { upstream: Upstream, error: UpstreamError }

export async function queryNarInfo (upstreams: readonly Upstream[], hashPart: string, log: Logger, signal?: AbortSignal): Promise<NarInfoOutcome> {
  const pending = new Map<Upstream, Promise<Settled>>()
  for (const upstream of upstreams) {
    pending.set(upstream, upstream.fetchNarInfo(hashPart, { signal }).then(
      answer => ({ upstream, answer }),
      (err: unknown) => {
        if (signal?.aborted === true) throw err
        const error = err instanceof UpstreamError ? err : new UpstreamError(upstream.name, String(err), { cause: err })
        return { upstream, error }
      }))
  }
  const priorities = [...new Set(upstreams.map(u => u.priority))].sort((a, b) => a - b)
  const errors: UpstreamError[] = []
  let negativeCacheable = true
  for (const priority of priorities) {
    const group = new Set(upstreams.filter(u => u.priority === priority).map(u => pending.get(u)!))
    while (group.size > 0) {
      const settled = await Promise.race(group)
      group.delete(pending.get(settled.upstream)!)
      if ('error' in settled) {
        log.warn({ upstream: settled.upstream.name, hashPart, err: settled.error.message }, 'upstream failed to answer a narinfo request')
        errors.push(settled.error)
        continue
      }
      const { answer } = settled
      if (answer.kind === 'found') return { kind: 'found', upstream: settled.upstream, narInfo: answer.narInfo, text: answer.text }
      if (answer.kind === 'rejected') {
        negativeCacheable = false
        log.warn({ upstream: settled.upstream.name, hashPart, reason: answer.reason }, 'narinfo rejected, treated as absent from this upstream')
      }
    }
  }
  if (errors.length > 0) return { kind: 'failed', errors }
  return { kind: 'absent', negativeCacheable }
}
