/**
 * The paths of a binary cache in references-first order, streamed: each narinfo is read when the
 * walk reaches it and let go once its path is handed on, so memory holds the hash parts seen (a
 * few dozen bytes each) and a bounded window of narinfos in flight — not every narinfo of the
 * cache. A depth-first walk from each root emits a path after the references it has among the
 * wanted paths (all of them with `closure`); the next `window` roots and the references of the
 * path being expanded are fetched ahead, concurrently, so an HTTP cache's latency overlaps. The
 * hash parts kept are copies: cut from a narinfo, they would keep the whole narinfo alive.
 */
import { NarInfo } from '../nix/narinfo.ts'
import { parseStorePathOrBaseName } from '../nix/store-path.ts'
import type { NarInfoAnswer } from '../upstream/upstream.ts'
import { detached } from '../util/heap.ts'

export type Walked = { narInfo: NarInfo, text: string } | { failed: { path: string, reason: string } }

export interface WalkOptions {
  /** Follow references beyond the roots. */
  closure: boolean
  /** Roots fetched ahead of the walk. */
  window: number
  signal?: AbortSignal
}

type Answer = NarInfoAnswer | { kind: 'error', err: Error }
type Found = Extract<NarInfoAnswer, { kind: 'found' }>

/** How deep in the walk a path waiting for its references keeps its narinfo. */
const KEEP_DEPTH = 4096

/** One walk over one cache; paths emitted by an earlier `walk` call are not emitted again. */
export class CacheWalk {
  readonly #fetch: (hashPart: string, signal?: AbortSignal) => Promise<NarInfoAnswer>
  readonly #name: string
  readonly #emitted = new Set<string>()
  readonly #pending = new Map<string, Promise<Answer>>()

  constructor (name: string, fetch: (hashPart: string, signal?: AbortSignal) => Promise<NarInfoAnswer>) {
    this.#name = name
    this.#fetch = fetch
  }

  #start (hashPart: string, signal?: AbortSignal): void {
    if (this.#pending.has(hashPart) || this.#emitted.has(hashPart)) return
    this.#pending.set(hashPart, this.#fetch(hashPart, signal).catch((err: unknown) => ({ kind: 'error' as const, err: err as Error })))
  }

  async #take (hashPart: string, signal?: AbortSignal): Promise<Answer> {
    this.#start(hashPart, signal)
    const answer = this.#pending.get(hashPart)!
    this.#pending.delete(hashPart)
    return await answer
  }

  /** Paths of `roots` (hash parts, without duplicates) and, with `closure`, of their closures. */
  async * walk (roots: readonly string[], options: WalkOptions): AsyncGenerator<Walked> {
    const wanted = options.closure ? undefined : new Set(roots)
    const signal = options.signal
    for (let i = 0; i < roots.length; i++) {
      for (let j = i; j < Math.min(i + options.window, roots.length); j++) this.#start(roots[j]!, signal)
      const root = roots[i]!
      if (this.#emitted.has(root)) { this.#pending.delete(root); continue }
      const stack: Array<{ hashPart: string, text?: string, refs?: string[], next: number }> = [{ hashPart: root, next: 0 }]
      const onStack = new Set([root])
      while (stack.length > 0) {
        signal?.throwIfAborted()
        const top = stack.at(-1)!
        if (top.refs === undefined) {
          const answer = await this.#take(top.hashPart, signal)
          const failure = failureOf(answer, this.#name)
          if (failure !== undefined) {
            if (answer.kind === 'error' && signal?.aborted === true) throw answer.err
            stack.pop()
            onStack.delete(top.hashPart)
            this.#emitted.add(detached(top.hashPart))
            yield { failed: { path: top.hashPart, reason: failure } }
            continue
          }
          const found = answer as Found
          top.refs = []
          for (const ref of found.narInfo.references) {
            const h = parseStorePathOrBaseName(ref).hashPart
            if (h === top.hashPart || this.#emitted.has(h) || onStack.has(h) || (wanted !== undefined && !wanted.has(h))) continue
            top.refs.push(detached(h))
            // Fetched ahead only while few are in flight: on a deep chain every step has
            // references still to visit, and their narinfos must not pile up.
            if (this.#pending.size < 4 * options.window) this.#start(h, signal)
          }
          if (top.refs.length === 0) {
            stack.pop()
            onStack.delete(top.hashPart)
            this.#emitted.add(detached(top.hashPart))
            yield { narInfo: found.narInfo, text: found.text }
            continue
          }
          // A path waiting for its references keeps its narinfo as text only (parsed again when
          // it is handed on), and only near the top of the walk: below KEEP_DEPTH it is read
          // again, so that a chain of references as long as the cache holds no narinfo per step.
          if (stack.length <= KEEP_DEPTH) top.text = found.text
        }
        const ref = top.refs[top.next++]
        if (ref !== undefined) {
          if (this.#emitted.has(ref) || onStack.has(ref)) { if (this.#emitted.has(ref)) this.#pending.delete(ref); continue }
          stack.push({ hashPart: ref, next: 0 })
          onStack.add(ref)
          continue
        }
        stack.pop()
        onStack.delete(top.hashPart)
        let out: Walked
        if (top.text !== undefined) {
          out = { narInfo: NarInfo.parse(top.text), text: top.text }
        } else {
          const again = await this.#take(top.hashPart, signal)
          const failure = failureOf(again, this.#name)
          out = failure === undefined ? { narInfo: (again as Found).narInfo, text: (again as Found).text } : { failed: { path: top.hashPart, reason: failure } }
        }
        this.#emitted.add(detached(top.hashPart))
        yield out
      }
    }
  }
}

function failureOf (answer: Answer, cache: string): string | undefined {
  if (answer.kind === 'absent') return `not in ${cache} (HTTP ${answer.status})`
  if (answer.kind === 'rejected') return `narinfo refused: ${answer.reason}`
  if (answer.kind === 'error') return answer.err.message
  return undefined
}
