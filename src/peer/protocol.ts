/**
 * The peer protocol's constants and wire formats, shared by the listener and the client, and
 * specified in docs/peer-protocol.md. Version 1 lives under `/narswarm/peer/v1/`; a node that
 * speaks another version answers 404 there, so versions never misread each other.
 *
 * Manifest (binary, big-endian): `NSM1` | u16 length | cdcId (UTF-8) | NarHash (32 bytes, sha256)
 * | NarSize u64 | n u32 | n × (chunk id 32 bytes | size u32). A manifest from a peer is only a
 * hint: every chunk is checked against its id, the whole NAR against the signed NarHash.
 *
 * Chunk frames (answer to `chunks`): per requested id, in order, u32 size then that many bytes;
 * size 0xFFFFFFFF means "not here" and has no bytes.
 */
import { FormatError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import type { Manifest } from '../chunk/types.ts'

export const PROTOCOL_VERSION = 1
export const PEER_PATH = '/narswarm/peer/v1'
export const DEFAULT_PEER_PORT = 37516
/** The DNS-SD service type peers announce. */
export const SERVICE_TYPE = 'narswarm'

/** Ids in one `have` request: 8192 × 32 bytes = 256 KiB of body. */
export const MAX_HAVE_IDS = 8192
/** Ids in one `chunks` request. */
export const MAX_BATCH_IDS = 256
/** A chunk larger than this is refused whatever a manifest says (the chunker's maximum is 256 KiB). */
export const MAX_CHUNK_SIZE = 4 << 20
export const ABSENT_FRAME = 0xFFFFFFFF

const MAGIC = Buffer.from('NSM1')

export function encodeManifest (m: Manifest): Buffer {
  const cdc = Buffer.from(m.cdcId, 'utf8')
  const out = Buffer.alloc(4 + 2 + cdc.length + 32 + 8 + 4 + m.chunks.length * 36)
  let o = MAGIC.copy(out, 0)
  o = out.writeUInt16BE(cdc.length, o)
  o += cdc.copy(out, o)
  o += Buffer.from(m.narHash.digest).copy(out, o)
  o = out.writeBigUInt64BE(BigInt(m.narSize), o)
  o = out.writeUInt32BE(m.chunks.length, o)
  for (const c of m.chunks) {
    o += Buffer.from(c.id).copy(out, o)
    o = out.writeUInt32BE(c.size, o)
  }
  return out
}

/** Parses a manifest and checks that it is whole and self-consistent (sizes add up to NarSize). */
export function decodeManifest (bytes: Uint8Array): Manifest {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const fail = (why: string): never => { throw new FormatError(`bad manifest: ${why}`) }
  if (buf.length < 6 || !buf.subarray(0, 4).equals(MAGIC)) fail('no NSM1 magic')
  const cdcLength = buf.readUInt16BE(4)
  let o = 6
  if (buf.length < o + cdcLength + 44) fail('truncated header')
  const cdcId = buf.toString('utf8', o, o + cdcLength)
  o += cdcLength
  const narHash = new NixHash('sha256', Uint8Array.prototype.slice.call(buf, o, o + 32))
  o += 32
  const narSize = buf.readBigUInt64BE(o)
  o += 8
  if (narSize > BigInt(Number.MAX_SAFE_INTEGER)) fail('NarSize too large')
  const n = buf.readUInt32BE(o)
  o += 4
  if (buf.length !== o + n * 36) fail(`${n} chunks announced, ${buf.length - o} bytes of entries`)
  const chunks = []
  let total = 0
  for (let i = 0; i < n; i++, o += 36) {
    const size = buf.readUInt32BE(o + 32)
    if (size === 0 || size > MAX_CHUNK_SIZE) fail(`chunk ${i} has size ${size}`)
    total += size
    chunks.push({ id: Uint8Array.prototype.slice.call(buf, o, o + 32), size })
  }
  if (total !== Number(narSize)) fail(`chunk sizes add up to ${total}, NarSize is ${narSize}`)
  return { cdcId, narHash, narSize: Number(narSize), chunks }
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
  if (body.length % 32 !== 0) throw new FormatError(`a list of chunk ids is a multiple of 32 bytes, got ${body.length}`)
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
