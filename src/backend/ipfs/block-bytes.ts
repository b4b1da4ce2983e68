/**
 * A block's bytes as they arrived: one buffer, or the pieces of several network reads, kept apart
 * rather than copied together. A fetched block is hashed, written to the block store and handed to
 * the reader piece by piece, so joining them would only cost a copy and, worse, a fresh buffer per
 * block: with a heap the size of a libp2p node's, those allocations were what set off most of V8's
 * full collections during a transfer. Only blocks that must be decoded (a DAG's interior nodes)
 * are joined.
 */
import { createHash } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { SHA2_256 } from './locator.ts'

export type BlockBytes = Uint8Array | Uint8Array[]

export function byteLength (bytes: BlockBytes): number {
  if (!Array.isArray(bytes)) return bytes.length
  let length = 0
  for (const piece of bytes) length += piece.length
  return length
}

/** The pieces, as a list. */
export function pieces (bytes: BlockBytes): Uint8Array[] {
  return Array.isArray(bytes) ? bytes : [bytes]
}

/** One buffer: the block itself, or its pieces copied together. */
export function contiguous (bytes: BlockBytes): Uint8Array {
  if (!Array.isArray(bytes)) return bytes
  return bytes.length === 1 ? bytes[0]! : Buffer.concat(bytes)
}

/** A block's bytes from the chunks a block store or an API hands them out in. */
export async function blockBytes (chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of chunks) parts.push(c)
  return contiguous(parts)
}

/** True when `bytes` hash to `cid` (sha2-256, the only hash narswarm accepts). */
export function blockMatches (cid: CID, bytes: BlockBytes): boolean {
  if (cid.multihash.code !== SHA2_256) return false
  const hash = createHash('sha256')
  for (const piece of pieces(bytes)) hash.update(piece)
  return hash.digest().equals(cid.multihash.digest)
}
