/**
 * FastCDC content-defined chunking (Xia et al., USENIX ATC 2016), as attic and casync use it, with
 * their defaults: min/avg/max 16/64/256 KiB. A 32-bit gear hash `h = (h << 1) + GEAR[byte]` rolls
 * over the bytes; a chunk ends where the hash's top bits are all zero. Normalized chunking level 1:
 * between `min` and `avg` the mask has log2(avg)+1 bits (a cut is less likely), after `avg` it has
 * log2(avg)-1 (more likely); no cut is looked for in the first `min` bytes, and `max` is a hard cut.
 * A NAR shorter than `avg` is one chunk (attic's threshold): splitting it would only add rows.
 *
 * The gear table is derived, not pasted: GEAR[i] is the first four bytes, big-endian, of
 * SHA-256 of the ASCII text `gear` followed by i in decimal (`gear0` … `gear255`). The table and
 * the parameters are named by `cdcId` (`fcdc32-v1/16384/65536/262144`); any change to either,
 * or to the cut rule above, must change the id, since chunk boundaries (and so which chunks two
 * stores share) depend on all of them. The test vectors in test/chunk/fastcdc.test.ts pin it.
 *
 * Streaming: bytes are copied once into the chunk being built, so memory is one chunk (≤ max)
 * whatever the input's piece sizes.
 */
import { createHash } from 'node:crypto'

export interface CdcParams {
  min: number
  avg: number
  max: number
}

export const DEFAULT_CDC: CdcParams = { min: 16384, avg: 65536, max: 262144 }

const VERSION = 'fcdc32-v1'

/** The versioned id of a chunker: parameters, gear table and cut rule. */
export function cdcIdOf (p: CdcParams): string {
  return `${VERSION}/${p.min}/${p.avg}/${p.max}`
}

/** The parameters named by a chunker id of this implementation; undefined for any other id. */
export function paramsOf (cdcId: string): CdcParams | undefined {
  const m = /^fcdc32-v1\/(\d{1,9})\/(\d{1,9})\/(\d{1,9})$/.exec(cdcId)
  if (m === null) return undefined
  const p = { min: Number(m[1]), avg: Number(m[2]), max: Number(m[3]) }
  return checkParams(p) === undefined ? p : undefined
}

function checkParams (p: CdcParams): string | undefined {
  const pow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
  if (!pow2(p.avg) || p.avg < 256 || p.avg > 1 << 28) return 'avg must be a power of two between 256 and 2^28'
  if (!Number.isInteger(p.min) || !Number.isInteger(p.max) || p.min < 64 || p.min > p.avg || p.max < p.avg || p.max > 1 << 30) return 'need 64 ≤ min ≤ avg ≤ max ≤ 2^30'
  return undefined
}

export const GEAR: Int32Array = (() => {
  const table = new Int32Array(256)
  for (let i = 0; i < 256; i++) table[i] = createHash('sha256').update(`gear${i}`).digest().readInt32BE(0)
  return table
})()

/** A mask of the top `bits` bits of a 32-bit word, as a signed int32 (the hash is kept signed). */
function topMask (bits: number): number {
  return (((1 << bits) - 1) << (32 - bits)) | 0
}

/**
 * Where the chunk starting at `data[start]` ends (exclusive), looking at most up to `end`; -1 when
 * no cut lies before `end`. `state.h` carries the rolling hash over calls for a chunk that spans
 * input pieces; `offset` is how many bytes of the chunk came before `start`.
 */
function findCut (data: Uint8Array, start: number, end: number, offset: number, state: { h: number }, p: CdcParams, maskS: number, maskL: number): number {
  let h = state.h
  let i = start
  // Position in the chunk = offset + (i - start).
  const base = offset - start
  let stop = Math.min(end, start + (p.avg - offset))
  if (base + i < p.min) i = Math.min(stop, start + (p.min - offset))
  for (; i < stop; i++) {
    h = ((h << 1) + GEAR[data[i]!]!) | 0
    if ((h & maskS) === 0) { state.h = h; return i + 1 }
  }
  stop = Math.min(end, start + (p.max - offset))
  for (; i < stop; i++) {
    h = ((h << 1) + GEAR[data[i]!]!) | 0
    if ((h & maskL) === 0) { state.h = h; return i + 1 }
  }
  state.h = h
  if (base + i >= p.max) return i
  return -1
}

/** An incremental chunker: push pieces, take finished chunks; `finish` returns the last one. */
export class Chunker {
  readonly cdcId: string
  readonly #p: CdcParams
  readonly #maskS: number
  readonly #maskL: number
  /** The chunk being built. */
  #buf: Uint8Array
  #len = 0
  #state = { h: 0 }
  /** Until `avg` bytes have been seen the stream may still be one chunk, so nothing is cut. */
  #total = 0
  #head: Uint8Array[] | undefined = []
  /** With `reuse`: where the chunks of one push are built, overwritten by the next push. */
  #arena: Uint8Array | undefined
  #arenaUsed = 0

  /**
   * With `reuse`, the chunks `push` returns are valid only until the next call to `push`: no
   * allocation per chunk, for a caller that is done with them by then (the chunk store's ingest,
   * which writes each chunk before it asks for more).
   */
  constructor (params: CdcParams = DEFAULT_CDC, options: { reuse?: boolean } = {}) {
    if (options.reuse === true) this.#arena = new Uint8Array(0)
    const problem = checkParams(params)
    if (problem !== undefined) throw new RangeError(`FastCDC parameters: ${problem}`)
    this.#p = { ...params }
    this.cdcId = cdcIdOf(params)
    const bits = Math.log2(params.avg)
    this.#maskS = topMask(bits + 1)
    this.#maskL = topMask(bits - 1)
    this.#buf = new Uint8Array(params.max)
  }

  /**
   * Feeds `data`; returns the chunks it completed (each a fresh array the caller may keep). `data`
   * is not kept: the caller may reuse its buffer.
   */
  push (data: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = []
    if (this.#arena !== undefined) {
      // Enough for every chunk this push can complete: what is pending plus what comes in.
      const need = this.#len + data.length + (this.#head === undefined ? 0 : this.#total)
      if (this.#arena.length < need) this.#arena = new Uint8Array(Math.max(need, 2 * this.#p.max))
      this.#arenaUsed = 0
    }
    if (this.#head !== undefined) {
      // The first `avg` bytes are held whole (copied: the caller may reuse its buffer): a NAR
      // shorter than that is one chunk.
      this.#head.push(data.slice())
      this.#total += data.length
      if (this.#total < this.#p.avg) return out
      const head = this.#head
      this.#head = undefined
      for (const piece of head) this.#scan(piece, out)
      return out
    }
    this.#total += data.length
    this.#scan(data, out)
    return out
  }

  #scan (data: Uint8Array, out: Uint8Array[]): void {
    let pos = 0
    while (pos < data.length) {
      const cut = findCut(data, pos, data.length, this.#len, this.#state, this.#p, this.#maskS, this.#maskL)
      if (cut < 0) {
        this.#buf.set(data.subarray(pos), this.#len)
        this.#len += data.length - pos
        return
      }
      const n = this.#len + cut - pos
      let chunk: Uint8Array
      if (this.#arena === undefined) chunk = new Uint8Array(n)
      else {
        chunk = this.#arena.subarray(this.#arenaUsed, this.#arenaUsed + n)
        this.#arenaUsed += n
      }
      chunk.set(this.#buf.subarray(0, this.#len), 0)
      chunk.set(data.subarray(pos, cut), this.#len)
      out.push(chunk)
      this.#len = 0
      this.#state.h = 0
      pos = cut
    }
  }

  /** The last chunk (undefined when the stream was empty or ended on a cut). */
  finish (): Uint8Array | undefined {
    if (this.#head !== undefined) {
      const whole = this.#total === 0 ? undefined : Buffer.concat(this.#head, this.#total)
      this.#head = undefined
      return whole === undefined ? undefined : new Uint8Array(whole.buffer, whole.byteOffset, whole.length)
    }
    if (this.#len === 0) return undefined
    const last = this.#buf.slice(0, this.#len)
    this.#len = 0
    return last
  }
}

/** The chunks of a stream, in order; memory is one chunk plus the piece being read. */
export async function * chunkStream (body: AsyncIterable<Uint8Array>, params: CdcParams = DEFAULT_CDC): AsyncGenerator<Uint8Array> {
  const chunker = new Chunker(params)
  for await (const piece of body) yield * chunker.push(piece)
  const last = chunker.finish()
  if (last !== undefined) yield last
}
