/**
 * Fetching a file's blocks as one CAR stream from a trustless gateway, instead of asking for each
 * block: one request, and the blocks flow at the speed of the connection. The DAG reader asks for
 * blocks in depth-first order, the order the CAR is in, so each request is served by the next
 * block of the stream.
 *
 * Nothing in the stream is believed. A block is handed out only when its bytes hash to the CID the
 * reader asked for; a block the reader already has locally (a chunk shared with another NAR, a
 * repeated chunk) is skipped, unread; anything else ends the feed. Blocks the reader has are not asked
 * for: a stream is opened for a byte range (`entity-bytes=<from>:<to>`) that ends just before the
 * next block in the reader's window that is here, and an open stream is dropped when the reader
 * reaches a block it has; should a stream still run more than `SKIP_BUDGET` bytes behind, it is
 * asked for again from the reader's offset. A feed that cannot go on — no source has the file,
 * the stream ends, stalls for `STALL_MS`, or sends something unexpected — says so by returning
 * undefined, and the caller fetches the block another way (bitswap); it is never a failure of the
 * read by itself.
 *
 * Memory: the stream is pulled only as blocks are taken, so at most one block, what the transport
 * buffers, and `STORING` blocks on their way to the store are held.
 */
import { equals } from 'multiformats/bytes'
import type { CID } from 'multiformats/cid'
import { raceSignal } from 'race-signal'
import type { Logger } from '../../log.ts'
import type { NarSource } from '../../types.ts'
import { blockMatches, byteLength, type BlockBytes } from './block-bytes.ts'
import { readCar, type CarSection } from './car.ts'
import { MAX_BLOCK } from './locator.ts'

/**
 * Opens the CAR of the blocks `root`'s file needs for bytes `from` to `to` (inclusive; undefined:
 * to the end); undefined when the source lacks the root.
 */
export type OpenCar = (root: CID, range: { from: number, to?: number }, signal: AbortSignal) => Promise<AsyncIterable<Uint8Array> | undefined>

export interface CarSource { name: string, open: OpenCar }

/** How far the stream may lag behind the reader before it is asked for again from the reader's offset. */
const SKIP_BUDGET = 4 << 20
/** How long the stream may keep the reader waiting for its answer or for the next block. */
const STALL_MS = 5_000
/** Blocks being written to the store at once; the feed waits for the oldest beyond this. */
const STORING = 32
/** A section is a CID (under 128 bytes for sha2-256) and a block. */
const MAX_SECTION = MAX_BLOCK + 128

export interface FeedHooks {
  /** The block, when this node has it. */
  local: (cid: CID) => Promise<Uint8Array | undefined>
  /** Whether this node has the block, without reading it; `local` answers when not given. */
  has?: (cid: CID) => Promise<boolean>
  /** Keeps a verified block (for the next NAR that shares it, and for peers). */
  store: (block: CarSection) => Promise<void>
  log: Logger
  /** How long a stream may keep the reader waiting (ms); STALL_MS unless given. */
  stallMs?: number
}

export class CarFeed {
  readonly #root: CID
  readonly #sources: CarSource[]
  readonly #hooks: FeedHooks
  #blocks: AsyncGenerator<CarSection> | undefined
  /** The last byte the open stream covers; undefined: to the end of the file. */
  #streamTo: number | undefined
  /** Requests made and not yet answered, in order, with their local lookups under way. */
  readonly #waiting: Array<{ offset: number, lookup: Promise<BlockBytes | undefined> }> = []
  #stream: AbortController | undefined
  #source: CarSource | undefined
  #dead = false
  #turn: Promise<unknown> = Promise.resolve()
  /** Verified blocks on their way to the store, readable meanwhile. */
  readonly #storing = new Map<string, { bytes: BlockBytes, done: Promise<void> }>()
  /** CIDs this feed has delivered. */
  readonly #taken = new Set<string>()
  /** Bytes read from streams (CAR framing included), used or skipped. */
  bytesReceived = 0

  constructor (root: CID, sources: CarSource[], hooks: FeedHooks) {
    this.#root = root
    this.#sources = sources
    this.#hooks = hooks
    if (sources.length === 0) this.#dead = true
  }

  /**
   * The block `cid`, which starts at byte `offset` of the file: from the local store, else from
   * the stream. Undefined when neither has it (the caller fetches it another way). Calls are
   * answered in the order they are made.
   */
  async block (cid: CID, offset: number, signal: AbortSignal): Promise<{ bytes: BlockBytes, local: boolean } | undefined> {
    // Looked up at once, not in turn: lookups of the blocks in the reader's window overlap, and a
    // stream opened for one block can end where the next block that is here begins.
    const request = { offset, lookup: this.#lookup(cid) }
    request.lookup.catch(() => {})
    this.#waiting.push(request)
    const turn = this.#turn.then(async () => {
      this.#waiting.splice(this.#waiting.indexOf(request), 1)
      // A block this feed delivered while the lookup ran (a chunk repeated in the file) is here now.
      const here = await request.lookup ?? (this.#taken.has(cid.toString()) ? await this.#lookup(cid) : undefined)
      if (here !== undefined) {
        // The open stream would send what is here: drop it, and ask again after the gap.
        if (this.#blocks !== undefined && (this.#streamTo === undefined || this.#streamTo >= offset)) this.#drop()
        return { bytes: here, local: true }
      }
      if (this.#dead || signal.aborted) return undefined
      const bytes = await this.#take(cid, offset, signal)
      return bytes === undefined ? undefined : { bytes, local: false }
    })
    this.#turn = turn.catch(() => {})
    return await turn
  }

  async #take (cid: CID, offset: number, signal: AbortSignal): Promise<BlockBytes | undefined> {
    let restarted = false
    let skipped = 0
    try {
      if (this.#blocks === undefined && !await this.#open(offset, signal)) return undefined
      for (;;) {
        const next = await this.#next(signal)
        if (next === undefined) {
          // A bounded range ends where it was asked to; then a new one starts here.
          if (this.#streamTo === undefined || restarted) return this.#end('the stream ended early', cid)
          restarted = true
          this.#drop()
          if (!await this.#open(offset, signal)) return undefined
          continue
        }
        if (sameCid(next.cid, cid)) {
          if (!blockMatches(cid, next.bytes)) return this.#end('a block does not match its CID', cid)
          await this.#store(next)
          return next.bytes
        }
        // Another block is passed over, unhashed (its bytes are dropped), when this node has it.
        if (!await this.#has(next.cid)) return this.#end(`it sent ${next.cid.toString()} where ${cid.toString()} was due`, cid)
        skipped += byteLength(next.bytes)
        if (skipped > SKIP_BUDGET) {
          if (restarted) return this.#end('it does not resume at the offset asked for', cid)
          restarted = true
          skipped = 0
          this.#drop()
          if (!await this.#open(offset, signal)) return undefined
        }
      }
    } catch (err) {
      if (signal.aborted) throw signal.reason
      return this.#end((err as Error).message, cid)
    }
  }

  /**
   * Where a stream opened at `offset` should end: just before the first later block in the
   * reader's window that is here already; the end of the file when there is none.
   */
  async #rangeEnd (offset: number): Promise<number | undefined> {
    // The reader asks for its window one block at a time; let it finish asking.
    await new Promise(resolve => setImmediate(resolve))
    for (const later of this.#waiting) {
      if (later.offset <= offset) continue
      if (await later.lookup !== undefined) return later.offset - 1
    }
    return undefined
  }

  async #lookup (cid: CID): Promise<BlockBytes | undefined> {
    return this.#storing.get(cid.toString())?.bytes ?? await this.#hooks.local(cid)
  }

  async #has (cid: CID): Promise<boolean> {
    if (this.#storing.has(cid.toString())) return true
    return this.#hooks.has !== undefined ? await this.#hooks.has(cid) : await this.#hooks.local(cid) !== undefined
  }

  /** Starts writing a block; waits only when `STORING` writes are already under way. */
  async #store (block: CarSection): Promise<void> {
    const key = block.cid.toString()
    this.#taken.add(key)
    if (this.#storing.size >= STORING) await this.#storing.values().next().value!.done
    const done = this.#hooks.store(block).catch((err: Error) => {
      this.#hooks.log.warn({ cid: key, err: err.message }, 'ipfs block fetched but not stored')
    }).finally(() => this.#storing.delete(key))
    this.#storing.set(key, { bytes: block.bytes, done })
  }

  /** Resolves when every block taken so far is in the store. */
  async settled (): Promise<void> {
    await Promise.all([...this.#storing.values()].map(async s => await s.done))
  }

  /** Opens the stream at `offset` from the first source that has the file. */
  async #open (offset: number, signal: AbortSignal): Promise<boolean> {
    const candidates = this.#source === undefined ? this.#sources : [this.#source]
    const to = await this.#rangeEnd(offset)
    for (const source of candidates) {
      const controller = new AbortController()
      const deadline = AbortSignal.timeout(this.#hooks.stallMs ?? STALL_MS)
      try {
        // The stream lives on after this request (and its deadline): only the feed may end it.
        const body = await withDeadline(source.open(this.#root, to === undefined ? { from: offset } : { from: offset, to }, controller.signal), deadline, signal)
        if (body === undefined) continue
        this.#stream = controller
        this.#source = source
        this.#streamTo = to
        this.#blocks = (await withDeadline(readCar(this.#counted(body), MAX_SECTION), deadline, signal)).blocks
        return true
      } catch (err) {
        controller.abort()
        if (signal.aborted) throw signal.reason
        this.#hooks.log.debug({ source: source.name, root: this.#root.toString(), err: (err as Error).message }, 'ipfs CAR source failed; trying the next')
      }
    }
    this.#dead = true
    return false
  }

  /** Counts what the network delivered, whether or not it turns out to be needed. */
  async * #counted (body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      this.bytesReceived += chunk.length
      yield chunk
    }
  }

  async #next (signal: AbortSignal): Promise<CarSection | undefined> {
    const next = await withDeadline(this.#blocks!.next(), AbortSignal.timeout(this.#hooks.stallMs ?? STALL_MS), signal)
    return next.done === true ? undefined : next.value
  }

  #end (why: string, cid: CID): undefined {
    this.#hooks.log.debug({ source: this.#source?.name, root: this.#root.toString(), at: cid.toString(), why }, 'ipfs CAR stream given up; fetching the rest block by block')
    this.close()
    return undefined
  }

  #drop (): void {
    this.#stream?.abort(new Error('CAR stream no longer needed'))
    this.#blocks?.return(undefined).catch(() => {})
    this.#stream = undefined
    this.#blocks = undefined
    this.#streamTo = undefined
  }

  /** Ends the stream; later calls answer from the local store only. */
  close (): void {
    this.#dead = true
    this.#drop()
  }
}

/**
 * `open()`'s file, with `feed` closed once the body ends (read to its end or not) or when the
 * file cannot be opened; `ended` then runs, told whether the body was read to its end.
 */
export async function closingFeed (feed: CarFeed, open: () => Promise<NarSource | undefined>, ended?: (complete: boolean) => Promise<void>): Promise<NarSource | undefined> {
  let source: NarSource | undefined
  try {
    source = await open()
  } finally {
    if (source === undefined) feed.close()
  }
  if (source === undefined) return undefined
  const body = source.body
  source.body = (async function * () {
    let complete = false
    try {
      yield * body
      complete = true
    } finally {
      feed.close()
      await ended?.(complete)
    }
  })()
  return source
}

/** `work`, or a rejection when `deadline` or `signal` fires first. */
async function withDeadline<T> (work: Promise<T>, deadline: AbortSignal, signal: AbortSignal): Promise<T> {
  work.catch(() => {}) // a late failure after the race is lost is nobody's to handle
  return await raceSignal(work, AbortSignal.any([deadline, signal]))
}

function sameCid (a: CID, b: CID): boolean {
  return equals(a.bytes, b.bytes)
}
