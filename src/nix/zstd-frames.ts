/**
 * zstd frames that carry bytes as they are (RFC 8878 Raw blocks), so that a zstd stream can be
 * made of chunks stored compressed, sent as they lie on disk, and chunks stored raw, wrapped here
 * at the cost of a few header bytes: no compression is run. Concatenated frames are one valid
 * zstd stream (RFC 8878 §3.1), which every decoder reads as the concatenation of their contents.
 */

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
