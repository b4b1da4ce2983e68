/**
 * The zstd frame format (RFC 8878 §3.1), without compressing or decompressing anything. A zstd
 * stream is a sequence of frames, read as the concatenation of their contents by the zstd program
 * and by Nix (libarchive). Here: frames that carry bytes as they are (Raw blocks), so that a
 * stream can be made of chunks stored compressed, sent as they lie on disk, and chunks stored
 * raw, wrapped at the cost of a few header bytes; and the frames of a stream told apart, for a
 * decoder that stops at the end of the first one (node:zlib's).
 */
import { FormatError } from '../errors.ts'


const MAGIC = [0x28, 0xb5, 0x2f, 0xfd]
/** A Raw block holds at most Block_Maximum_Size = min(window, 128 KiB) bytes. */
const MAX_BLOCK = 128 * 1024

/**
 * One single-segment frame holding `bytes`: the headers are new buffers, the bytes are passed on
 * as they are (no copy). Empty input makes no frame.
 */
export function rawFrame (bytes: Uint8Array): Uint8Array[] {
  const n = bytes.length
  if (n === 0) return []
  // Single_Segment_flag (0x20): the window is the content size, given in 1, 2 or 4 bytes.
  let header: Uint8Array
  if (n < 256) header = Uint8Array.of(...MAGIC, 0x20, n)
  else if (n < 65536 + 256) header = Uint8Array.of(...MAGIC, 0x60, (n - 256) & 0xff, (n - 256) >>> 8)
  else header = Uint8Array.of(...MAGIC, 0xa0, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24)
  const out: Uint8Array[] = [header]
  for (let at = 0; at < n; at += MAX_BLOCK) {
    const size = Math.min(MAX_BLOCK, n - at)
    // Block header, little-endian: Last_Block in bit 0, Block_Type 0 (Raw) in bits 1–2, the size above.
    const last = at + size >= n ? 1 : 0
    const value = (size << 3) | last
    out.push(Uint8Array.of(value & 0xff, (value >>> 8) & 0xff, value >>> 16), bytes.subarray(at, at + size))
  }
  return out
}

/** `source` as a zstd stream of raw frames, one per piece it yields. */
export async function * rawFrames (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const piece of source) yield * rawFrame(piece)
}

const SKIPPABLE_MIN = 0x184d2a50
const SKIPPABLE_MAX = 0x184d2a5f
const ZSTD_MAGIC = 0xfd2fb528
/** Bytes of a block read at a time, so that a block is never buffered whole. */
const STEP = 64 * 1024
/** Bytes of a frame handed to the decoder at a time. */
const BATCH = 64 * 1024

/**
 * The frames of a zstd stream, in order, each as an iterable of its bytes (to be read to its end
 * before the next is asked for); skippable frames are left out. Only frame headers and block
 * headers are read. Bytes that do not start a frame end the stream, as they end node:zlib's
 * decoder. Throws FormatError for a frame cut short or a block of the reserved type; errors of
 * `source` pass through.
 */
export async function * zstdFrames (source: AsyncIterable<Uint8Array>): AsyncGenerator<AsyncIterable<Uint8Array>, void, undefined> {
  const input = new Input(source)
  for (;;) {
    const magic = await input.read(4, false)
    if (magic === undefined) return
    const word = (magic[0]! | magic[1]! << 8 | magic[2]! << 16 | magic[3]! << 24) >>> 0
    if (word >= SKIPPABLE_MIN && word <= SKIPPABLE_MAX) {
      const size = await input.read(4, true)
      for (let left = (size![0]! | size![1]! << 8 | size![2]! << 16 | size![3]! << 24) >>> 0; left > 0;) left -= (await input.read(Math.min(left, STEP), true))!.length
      continue
    }
    if (word !== ZSTD_MAGIC) return
    let read = false
    yield (async function * () {
      // The frame's small pieces (headers, short reads) go out joined: a decoder call per piece
      // of a few bytes costs more than copying them.
      let batch: Uint8Array[] = [magic]
      let size = magic.length
      const add = (piece: Uint8Array): void => {
        batch.push(piece)
        size += piece.length
      }
      const take = (): Uint8Array => {
        const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch, size)
        batch = []
        size = 0
        return out
      }
      const descriptor = (await input.read(1, true))!
      add(descriptor)
      const fhd = descriptor[0]!
      const header = headerLength(fhd)
      if (header > 0) add((await input.read(header, true))!)
      for (let last = false; !last;) {
        const blockHeader = (await input.read(3, true))!
        add(blockHeader)
        const b = block(blockHeader, 0)
        if (b === undefined) throw new FormatError('zstd: a block of the reserved type')
        last = b.last
        for (let left = b.length; left > 0;) {
          const piece = (await input.read(Math.min(left, STEP), true))!
          left -= piece.length
          add(piece)
          if (size >= BATCH) yield take()
        }
      }
      if (checksumLength(fhd) > 0) add((await input.read(checksumLength(fhd), true))!)
      if (size > 0) yield take()
      read = true
    })()
    if (!read) throw new Error('a zstd frame was not read to its end before the next was asked for')
  }
}

/** Exact byte counts from a stream of pieces of any size, copied only when a read spans pieces. */
class Input {
  readonly #source: AsyncIterator<Uint8Array>
  #head: Uint8Array = new Uint8Array(0)

  constructor (source: AsyncIterable<Uint8Array>) {
    this.#source = source[Symbol.asyncIterator]()
  }

  /**
   * Up to `max` bytes, at least one; exactly `max` when they fit in what is at hand or `max` is
   * a header's length (under 16). At the end of the source: undefined, or FormatError when `inFrame`.
   */
  async read (max: number, inFrame: boolean): Promise<Uint8Array | undefined> {
    const exact = max < 16
    while (this.#head.length < (exact ? max : 1)) {
      const next = await this.#source.next()
      if (next.done === true) {
        // Between frames, a few bytes that cannot start one are ignored like any trailing bytes.
        if (!inFrame) return undefined
        throw new FormatError('zstd: corrupt or truncated input: the stream ends inside a frame')
      }
      this.#head = this.#head.length === 0 ? next.value : Buffer.concat([this.#head, next.value])
    }
    const n = Math.min(max, this.#head.length)
    const out = this.#head.subarray(0, n)
    this.#head = this.#head.subarray(n)
    return out
  }
}

/**
 * The length of the zstd frame at the start of `bytes`, read from its headers alone; undefined
 * when `bytes` does not start with a whole frame (another magic, a skippable frame, cut short,
 * a block of the reserved type).
 */
export function frameLength (bytes: Uint8Array): number | undefined {
  if (bytes.length < 6 || (bytes[0]! | bytes[1]! << 8 | bytes[2]! << 16 | bytes[3]! << 24) >>> 0 !== ZSTD_MAGIC) return undefined
  const fhd = bytes[4]!
  let at = 5 + headerLength(fhd)
  for (let last = false; !last;) {
    if (at + 3 > bytes.length) return undefined
    const b = block(bytes, at)
    if (b === undefined) return undefined
    last = b.last
    at += 3 + b.length
  }
  at += checksumLength(fhd)
  return at <= bytes.length ? at : undefined
}

/** The bytes of a frame header after its descriptor (window, dictionary id, content size), from the descriptor. */
function headerLength (fhd: number): number {
  const single = (fhd >> 5) & 1
  return (single === 1 ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!
}

/** The bytes of the content checksum at a frame's end, from its descriptor. */
function checksumLength (fhd: number): number {
  return (fhd >> 2) & 1 ? 4 : 0
}

/**
 * The block whose 3-byte header is at `at`: whether it is the frame's last, and how many bytes
 * follow its header (a Raw or Compressed block holds its size; an RLE block one byte, repeated).
 * Undefined for a block of the reserved type.
 */
function block (bytes: Uint8Array, at: number): { last: boolean, length: number } | undefined {
  const value = bytes[at]! | bytes[at + 1]! << 8 | bytes[at + 2]! << 16
  const type = (value >> 1) & 3
  if (type === 3) return undefined
  return { last: (value & 1) === 1, length: type === 1 ? 1 : value >>> 3 }
}
