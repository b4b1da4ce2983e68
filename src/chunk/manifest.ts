/**
 * The binary form of a manifest, as stored in the index and sent to LAN peers:
 *
 *     "NSM1" | u8 len | cdcId (ASCII) | narHash (32 B, sha256) | narSize (u64 BE) | n (u32 BE)
 *            | n × ( chunk id (32 B) | chunk size (u32 BE) )
 *
 * 36 bytes per chunk: the 45 MB NAR of git has a 16 KB manifest. Bytes from a peer are untrusted,
 * so decoding is strict: exact length, sizes adding up to narSize, and, for a chunker id this
 * implementation knows, every chunk within its bounds (which also bounds how many there can be).
 */
import { FormatError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import { paramsOf } from './fastcdc.ts'
import { hexOf } from './files.ts'
import type { Manifest } from './types.ts'

const MAGIC = Buffer.from('NSM1')
const ENTRY = 36
/** No NAR is bigger than this (2^53 is where byte counts stop being exact numbers). */
const MAX_NAR_SIZE = Number.MAX_SAFE_INTEGER
/** For unknown chunker ids: a manifest this long (≈ 150 MB) is refused without reading on. */
const MAX_CHUNKS = 1 << 22

export function encodeManifest (m: Manifest): Uint8Array {
  const id = Buffer.from(m.cdcId, 'ascii')
  if (id.length > 255 || id.toString('ascii') !== m.cdcId) throw new FormatError(`chunker id '${m.cdcId}' is not short ASCII`)
  if (m.narHash.algorithm !== 'sha256') throw new FormatError(`a manifest needs a sha256 NarHash, got ${m.narHash.algorithm}`)
  const head = 4 + 1 + id.length + 32 + 8 + 4
  const out = Buffer.allocUnsafe(head + m.chunks.length * ENTRY)
  MAGIC.copy(out, 0)
  out[4] = id.length
  id.copy(out, 5)
  let o = 5 + id.length
  out.set(m.narHash.digest, o); o += 32
  out.writeBigUInt64BE(BigInt(m.narSize), o); o += 8
  out.writeUInt32BE(m.chunks.length, o); o += 4
  for (const c of m.chunks) {
    if (c.id.length !== 32) throw new FormatError(`chunk id must be 32 bytes, got ${c.id.length}`)
    out.set(c.id, o)
    out.writeUInt32BE(c.size, o + 32)
    o += ENTRY
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length)
}

export function decodeManifest (bytes: Uint8Array): Manifest {
  // One copy of the whole manifest; chunk ids are views into it. A separate array per id would
  // cost hundreds of bytes each: tens of megabytes for the 50,000 chunks of a 4 GiB NAR.
  const copy = new Uint8Array(bytes)
  const b = Buffer.from(copy.buffer, copy.byteOffset, copy.length)
  const fail = (msg: string, position?: number): never => {
    throw new FormatError(`manifest: ${msg}`, position === undefined ? undefined : { position })
  }
  if (b.length < 5 || !b.subarray(0, 4).equals(MAGIC)) fail('does not start with NSM1', 0)
  const idLen = b[4]!
  const head = 5 + idLen + 32 + 8 + 4
  if (b.length < head) fail(`truncated header (${b.length} bytes)`, b.length)
  const cdcId = b.toString('latin1', 5, 5 + idLen)
  if (!/^[\x21-\x7e]+$/.test(cdcId)) fail('chunker id is not printable ASCII', 5)
  let o = 5 + idLen
  const narHash = new NixHash('sha256', new Uint8Array(b.subarray(o, o + 32))); o += 32
  const bigSize = b.readBigUInt64BE(o); o += 8
  if (bigSize > BigInt(MAX_NAR_SIZE)) fail(`narSize ${bigSize} is too large`, o - 8)
  const narSize = Number(bigSize)
  const n = b.readUInt32BE(o); o += 4
  const params = paramsOf(cdcId)
  const maxChunks = params === undefined ? MAX_CHUNKS : (narSize < params.avg ? 1 : Math.floor(narSize / params.min) + 1)
  if (n > maxChunks) fail(`${n} chunks for a NAR of ${narSize} bytes`, o - 4)
  if (b.length !== head + n * ENTRY) fail(`length ${b.length} does not match ${n} chunks (${head + n * ENTRY} bytes)`, b.length)
  if ((n === 0) !== (narSize === 0)) fail(`${n} chunks for a NAR of ${narSize} bytes`, o - 4)
  const chunks = new Array<{ id: Uint8Array, size: number }>(n)
  let total = 0
  for (let i = 0; i < n; i++) {
    const size = b.readUInt32BE(o + 32)
    if (size === 0) fail(`chunk ${i} is empty`, o + 32)
    if (params !== undefined && narSize >= params.avg && (size > params.max || (size < params.min && i < n - 1))) {
      fail(`chunk ${i} has ${size} bytes, outside ${params.min}–${params.max} for ${cdcId}`, o + 32)
    }
    chunks[i] = { id: copy.subarray(o, o + 32), size }
    total += size
    o += ENTRY
  }
  if (total !== narSize) fail(`chunk sizes add up to ${total}, narSize is ${narSize}`)
  return { cdcId, narHash, narSize, chunks }
}

/** The distinct chunks of a manifest by hex id, with how often it uses each: its references. */
export function chunkRefs (m: Manifest): Map<string, { id: Uint8Array, n: number }> {
  const refs = new Map<string, { id: Uint8Array, n: number }>()
  for (const c of m.chunks) {
    const hex = hexOf(c.id)
    const e = refs.get(hex)
    if (e === undefined) refs.set(hex, { id: c.id, n: 1 })
    else e.n++
  }
  return refs
}
