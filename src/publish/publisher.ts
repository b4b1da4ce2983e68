/**
 * The publishing engine behind `narswarm publish`: for each store path, its NAR is streamed once,
 * checked against the recorded NarHash and NarSize while it flows, and handed to every publishing
 * backend at once (`tee`, so the slowest sets the pace and memory stays at a chunk); then the
 * narinfo, signed with the user's keys on top of the signatures that verified, and each locator
 * are recorded in every mapper. Recording comes last and one record is one transaction, so a run
 * killed at any point leaves either a whole record or none, and a re-run skips what is complete.
 * Failures are per path: the reason is kept and the run goes on.
 */
import { IntegrityError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { narFileName } from '../nix/compression.ts'
import type { NixHash } from '../nix/hash.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { signNarInfo, type SecretKey } from '../nix/signature.ts'
import { parseStorePath } from '../nix/store-path.ts'
import type { Backend, Locator, Mapper } from '../types.ts'
import { tee } from '../util/tee.ts'
import { verifyNar } from '../util/verify.ts'

/** One store path ready to publish: its identity and a way to read its NAR (or where it already is). */
export interface PublishItem {
  storePath: string
  narHash: NixHash
  narSize: number
  /** Full store paths or base names. */
  references: string[]
  deriver?: string
  ca?: string
  /** Signatures that verified against a trusted key; kept in the published narinfo. */
  sigs: string[]
  /** The uncompressed NAR, not yet verified; absent for narinfo-only publishing. */
  openNar?: (signal?: AbortSignal) => Promise<AsyncIterable<Uint8Array>>
  /** Narinfo-only publishing: where the NAR already is, and the narinfo as its cache signed it. */
  existing?: { locator: Locator, narInfo: string }
}

export interface PublishEvents {
  /** Bytes of NAR that went through (for progress). */
  bytes?: (n: number) => void
  done?: (item: PublishItem, outcome: 'published' | 'skipped') => void
  failed?: (storePath: string, reason: string) => void
}

export interface PublisherOptions {
  backends: Backend[]
  mappers: Mapper[]
  signKeys: Array<SecretKey | string>
  log: Logger
  events?: PublishEvents
}

export class Publisher {
  readonly #backends: Backend[]
  readonly #mappers: Mapper[]
  readonly #signKeys: Array<SecretKey | string>
  readonly #log: Logger
  readonly #events: PublishEvents

  constructor (options: PublisherOptions) {
    this.#backends = options.backends.filter(b => b.publish !== undefined)
    this.#mappers = options.mappers.filter(m => m.record !== undefined)
    this.#signKeys = options.signKeys
    this.#log = options.log
    this.#events = options.events ?? {}
  }

  /**
   * Publishes `items` with `jobs` at a time, in order of start; resolves when all are settled. The
   * items are pulled as workers free up, so a stream of them is never read further ahead than that.
   */
  async run (items: Iterable<PublishItem> | AsyncIterable<PublishItem>, jobs: number, signal?: AbortSignal): Promise<void> {
    const queue = Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]()
    const worker = async (): Promise<void> => {
      for (;;) {
        if (isAborted(signal)) return
        const next = await queue.next()
        if (next.done === true || isAborted(signal)) return
        const item = next.value
        try {
          const outcome = await this.publish(item, signal)
          this.#events.done?.(item, outcome)
        } catch (err) {
          if (isAborted(signal)) throw err
          this.#log.warn({ storePath: item.storePath, err: (err as Error).message }, 'publishing failed')
          this.#events.failed?.(item.storePath, (err as Error).message)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker))
    signal?.throwIfAborted()
  }

  /** Publishes one path; 'skipped' when every backend and mapper already has it. */
  async publish (item: PublishItem, signal?: AbortSignal): Promise<'published' | 'skipped'> {
    if (await this.#isRecorded(item, signal)) return 'skipped'
    let locators: Locator[]
    let narInfo: string
    if (item.existing !== undefined) {
      locators = [item.existing.locator]
      // The NAR was not read, so nothing of ours vouches for it: the cache's narinfo as it was.
      narInfo = item.existing.narInfo
    } else {
      locators = await this.#publishNar(item, signal)
      narInfo = this.#signedNarInfo(item)
    }
    // The narinfo goes with the last locator only: it is written (and parsed) once per mapper, and
    // a path is visible in the index only when every locator of it is recorded.
    for (const mapper of this.#mappers) {
      for (const [i, locator] of locators.entries()) {
        await mapper.record!(item.narHash, locator, i === locators.length - 1 ? { narInfo, signal } : { signal })
      }
    }
    return 'published'
  }

  async #publishNar (item: PublishItem, signal?: AbortSignal): Promise<Locator[]> {
    if (item.openNar === undefined) throw new Error(`no NAR to publish for ${item.storePath}`)
    if (this.#backends.length === 0) throw new Error('no configured backend can publish')
    const verified = verifyNar(await item.openNar(signal), item, `NAR of ${item.storePath}`)
    const counted = this.#events.bytes === undefined ? verified : count(verified, this.#events.bytes)
    const bodies = tee(counted, this.#backends.length)
    const results = await Promise.allSettled(this.#backends.map(async (backend, i) => {
      try {
        return await backend.publish!({ narHash: item.narHash, narSize: item.narSize, body: bodies[i]! }, { signal })
      } finally {
        bodies[i]!.close()
      }
    }))
    const failures = results.flatMap((r, i) => r.status === 'rejected' ? [{ backend: this.#backends[i]!.name, err: r.reason as Error }] : [])
    // A NAR that does not match its hash fails every backend alike: say it once, plainly.
    const integrity = failures.find(f => f.err instanceof IntegrityError)
    if (integrity !== undefined) throw integrity.err
    if (failures.length > 0) {
      // A path that reached only some backends is failed and not recorded; a re-run publishes
      // it again everywhere (publishing is idempotent).
      throw new Error(failures.map(f => `${f.backend}: ${f.err.message}`).join('; '))
    }
    return results.map(r => (r as PromiseFulfilledResult<Locator>).value)
  }

  #signedNarInfo (item: PublishItem): string {
    const fields = {
      storePath: item.storePath,
      url: narFileName(item.narHash, 'none'),
      compression: 'none',
      narHash: item.narHash,
      narSize: item.narSize,
      references: item.references,
      sigs: item.sigs,
      ...(item.deriver === undefined ? {} : { deriver: item.deriver }),
      ...(item.ca === undefined ? {} : { ca: item.ca })
    }
    return signNarInfo(NarInfo.build(fields), ...this.#signKeys).toString()
  }

  /** Whether every mapper has the narinfo and a locator for every publishing backend. */
  async #isRecorded (item: PublishItem, signal?: AbortSignal): Promise<boolean> {
    if (this.#mappers.length === 0) return false
    const hashPart = parseStorePath(item.storePath).hashPart
    const options = signal === undefined ? {} : { signal }
    for (const mapper of this.#mappers) {
      if (mapper.narInfo !== undefined && await mapper.narInfo(hashPart, options) === undefined) return false
      const recorded = await mapper.lookup(item.narHash, options)
      const urls = recorded.map(l => l.url)
      if (item.existing !== undefined) {
        if (!urls.includes(item.existing.locator.url)) return false
        continue
      }
      const schemes = urls.map(u => u.slice(0, Math.max(u.indexOf(':'), 0)))
      if (!this.#backends.every(b => b.schemes.some(s => schemes.includes(s)))) return false
      // A backend that can lose what it published must still hold it, or the path is published again.
      for (const backend of this.#backends) {
        if (backend.has === undefined) continue
        const own = recorded.filter((_, i) => backend.schemes.includes(schemes[i]!))
        let held = false
        for (const locator of own) if (await backend.has(locator, options)) { held = true; break }
        if (!held) return false
      }
    }
    return true
  }
}

async function * count (source: AsyncIterable<Uint8Array>, report: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    report(chunk.length)
    yield chunk
  }
}

function isAborted (signal?: AbortSignal): boolean {
  return signal?.aborted === true
}
