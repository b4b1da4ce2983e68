/**
 * The peer protocol's constants and wire formats, shared by the listener and the client, and
 * specified in docs/peer-protocol.md. Version 1 lives under `/narswarm/peer/v1/`; a node that
 * speaks another version answers 404 there, so versions never misread each other.
 *
 * Manifests travel in the chunk store's binary form (src/chunk/manifest.ts). A manifest from a
 * peer is only a hint: every chunk is checked against its id, the whole NAR against the signed
 * NarHash.
 *
 * Chunk frames (answer to `chunks`): per requested id, in order, u32 size then that many bytes;
 * size 0xFFFFFFFF means "not here" and has no bytes. The bytes are the chunk's (CHUNKS_TYPE), or,
 * when the request accepts STORED_CHUNKS_TYPE and the answer says so, the chunk file as the peer
 * stores it (src/chunk/chunk-file.ts: a header byte, then the bytes raw or as one zstd frame):
 * compressible chunks cross the LAN compressed and are stored without compressing them again.
 * A node that predates it answers CHUNKS_TYPE whatever the request accepts.
 */
import { FormatError } from '../errors.ts'

export { decodeManifest, encodeManifest } from '../chunk/manifest.ts'

export const PROTOCOL_VERSION = 1
export const PEER_PATH = '/narswarm/peer/v1'
export const DEFAULT_PEER_PORT = 37516
/** The DNS-SD service type peers announce. */
export const SERVICE_TYPE = 'narswarm'

/** Ids in one `have` request: 8192 × 32 bytes = 256 KiB of body. */
export const MAX_HAVE_IDS = 8192
/** Ids in one `chunks` request. */
export const MAX_BATCH_IDS = 256
export const ABSENT_FRAME = 0xFFFFFFFF
export const CHUNKS_TYPE = 'application/x-narswarm-chunks'
export const STORED_CHUNKS_TYPE = 'application/x-narswarm-stored-chunks'

/** Whether a `chunks` request's Accept header takes chunk files as stored. */
export function acceptsStored (accept: string | undefined): boolean {
  return accept !== undefined && accept.split(',').some(type => type.split(';')[0]!.trim() === STORED_CHUNKS_TYPE)
}

/** The largest manifest a NAR of `narSize` bytes can have (chunks of at least 1 KiB). */
export function manifestLimit (narSize: number): number {
  return Math.min(64 + 36 * (Math.ceil(narSize / 1024) + 1), 64 << 20)
}

/** Concatenated 32-byte ids, the body of `have` and `chunks`. */
export function encodeIds (ids: readonly Uint8Array[]): Buffer {
  return Buffer.concat(ids.map(id => Buffer.from(id.buffer, id.byteOffset, id.byteLength)))
}

export function decodeIds (body: Buffer, max: number): Uint8Array[] {
  if (body.length === 0 || body.length % 32 !== 0) throw new FormatError(`a list of chunk ids is a non-empty multiple of 32 bytes, got ${body.length}`)
  if (body.length / 32 > max) throw new FormatError(`at most ${max} chunk ids per request, got ${body.length / 32}`)
  const ids: Uint8Array[] = []
  for (let o = 0; o < body.length; o += 32) ids.push(body.subarray(o, o + 32))
  return ids
}

/** One bit per id, most significant bit of byte 0 first. */
export function encodeBitmap (bits: readonly boolean[]): Buffer {
  const out = Buffer.alloc(Math.ceil(bits.length / 8))
  bits.forEach((b, i) => { if (b) out[i >> 3]! |= 0x80 >> (i & 7) })
  return out
}

export function decodeBitmap (bytes: Uint8Array, n: number): boolean[] {
  if (bytes.length !== Math.ceil(n / 8)) throw new FormatError(`a bitmap for ${n} ids is ${Math.ceil(n / 8)} bytes, got ${bytes.length}`)
  return Array.from({ length: n }, (_, i) => (bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0)
}

export function chunkHex (id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex')
}
