/**
 * One chunk as it is laid out on disk (a record in a pack, or a file of its own in stores made
 * before packs): a one-byte header (RAW or ZSTD) and the bytes, zstd-3 compressed only when that
 * saves at least an eighth. pack-writer.ts writes these records, files.ts reads them; peers send
 * them to each other as they are (docs/peer-protocol.md), so a chunk is compressed once, by the
 * node that first stored it.
 */
import { join } from 'node:path'
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib'
import { frameLength } from '../nix/zstd-frames.ts'

export const RAW = 0
export const ZSTD = 1

// A window no larger than the largest chunk: zstd then allocates a fraction of what its default
// (2 MiB for level 3) costs per call, and the process's memory stays flat over millions of chunks.
const ZSTD_OPTIONS = { params: { [constants.ZSTD_c_compressionLevel]: 3, [constants.ZSTD_c_windowLog]: 18 } }
const SAMPLE = 4096
const SAMPLE_OPTIONS = { params: { [constants.ZSTD_c_compressionLevel]: 1, [constants.ZSTD_c_windowLog]: 12 } }

/**
 * Whether compressing a chunk may pay: a 4 KiB sample from its middle is compressed at level 1
 * first, so chunks of compressed archives (most of a .jar, .gz, .png) cost a few microseconds, not
 * a full compression. A sample whose bytes are spread almost evenly over all 256 values (entropy
 * above 7.9 bits a byte; random bytes measure 7.95 in 4 KiB, machine code 6, text 5) is not even
 * tried: counting them costs a quarter of the sample compression, which creates a zstd context.
 * Compression runs on the calling thread: Node's one-shot asynchronous zstd was several times
 * slower per chunk than the synchronous call.
 */
function worthCompressing (bytes: Uint8Array): boolean {
  if (bytes.length < 64) return false
  if (bytes.length <= SAMPLE * 2) return true
  const start = (bytes.length - SAMPLE) >>> 1
  const sample = bytes.subarray(start, start + SAMPLE)
  if (entropy(sample) > 7.9) return false
  const packed = zstdCompressSync(sample, SAMPLE_OPTIONS)
  return packed.length < SAMPLE - (SAMPLE >>> 3)
}

const counts = new Uint32Array(256)

/** Shannon entropy of the bytes' distribution, in bits per byte. */
function entropy (bytes: Uint8Array): number {
  counts.fill(0)
  for (let i = 0; i < bytes.length; i++) counts[bytes[i]!]!++
  let h = 0
  for (let i = 0; i < 256; i++) {
    const c = counts[i]!
    if (c > 0) { const p = c / bytes.length; h -= p * Math.log2(p) }
  }
  return h
}

/** Where a chunk stored in a file of its own is (stores made before packs): `<root>/<2 hex>/<64 hex>`. */
export function chunkPath (root: string, hex: string): string {
  return join(root, hex.slice(0, 2), hex)
}

/** A chunk's file contents, header included: `[flag, ...body]` as two pieces. */
export function encodeChunk (bytes: Uint8Array): { flag: number, body: Uint8Array } {
  if (worthCompressing(bytes)) {
    const packed = zstdCompressSync(bytes, { ...ZSTD_OPTIONS, chunkSize: Math.max(bytes.length, 64) })
    if (packed.length <= bytes.length - (bytes.length >>> 3)) return { flag: ZSTD, body: packed }
  }
  return { flag: RAW, body: bytes }
}

/** Why the contents of a chunk file are not a chunk of the size asked for. */
export class ChunkFileError extends Error {}

/** 256 KiB, the largest chunk: the frames this store writes never need a larger window. */
const WINDOW_LOG_MAX = 18
const STRICT_PARAMS = { [constants.ZSTD_d_windowLogMax]: WINDOW_LOG_MAX }

/**
 * A chunk's `size` bytes from its file's contents (header and body): a raw body as it is (not
 * copied), a compressed one decompressed. `fromPeer`: the body came from another node and will be
 * stored and sent on to Nix as it is, so it must be what this store writes — one zstd frame with
 * nothing after it, smaller than the chunk, whose window is no larger than the largest chunk (a
 * frame may ask its decoder for up to 2 GiB). Throws ChunkFileError; the caller hashes the bytes.
 */
export function decodeChunkFile (file: Uint8Array, size: number, fromPeer = false): Uint8Array {
  if (file[0] === RAW && file.length === size + 1) return file.subarray(1)
  if (file[0] !== ZSTD || file.length < 2 || file.length > size + 1) throw new ChunkFileError(`${file.length} bytes with header ${file[0]} for a chunk of ${size} bytes`)
  const body = file.subarray(1)
  if (fromPeer && frameLength(body) !== body.length) throw new ChunkFileError('its body is not one whole zstd frame')
  let bytes: Uint8Array
  try {
    // One output buffer a little larger than the chunk, not zlib's 16 KiB pieces joined
    // afterwards: an output that fills its buffer exactly makes zlib allocate another, unused.
    bytes = zstdDecompressSync(body, { maxOutputLength: size + 64, chunkSize: size + 64, ...(fromPeer ? { params: STRICT_PARAMS } : {}) })
  } catch (err) {
    throw new ChunkFileError(`zstd: ${(err as Error).message}`)
  }
  if (bytes.length !== size) throw new ChunkFileError(`${bytes.length} bytes, expected ${size}`)
  return bytes
}
