/**
 * Reads the file a root CID names, block by block, from any source of blocks (the embedded node's
 * blockstore, kubo's `block/get`, a trustless gateway), and yields its bytes in order as the blocks
 * arrive: the first bytes flow as soon as the first leaf is here, not after the whole DAG.
 *
 * A bounded window of leaves is requested ahead of the reader (`readAhead`), so a fetch keeps
 * several blocks in flight on a slow network while memory stays at most `readAhead` blocks,
 * whatever the file's size. Interior nodes are read when the walk reaches them. Sources that do
 * not check blocks themselves are wrapped in `verifiedBlock` so every block is hashed against its
 * CID; every leaf's length is checked against the size its parent records, so a DAG cannot claim
 * one size and deliver another.
 */
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import type { CID } from 'multiformats/cid'
import { FormatError, IntegrityError } from '../../errors.ts'
import { blockMatches, byteLength, contiguous, pieces, type BlockBytes } from './block-bytes.ts'
import { DAG_PB, RAW, SHA2_256 } from './locator.ts'

/** A block by CID; `offset` is where the block's bytes start in the file being read. */
export type GetBlock = (cid: CID, options: { signal: AbortSignal, offset: number }) => Promise<BlockBytes>

/** A file's root block, decoded: its total size and the pieces to read in order. */
export interface FileRoot {
  size: number
  pieces: Piece[]
}

/** Inline bytes, or a child block with the number of file bytes it must hold. */
type Piece = { bytes: Uint8Array } | { cid: CID, size: number }

/** Checks a block against its CID's sha2-256 digest; for sources that do not check themselves. */
export function verifiedBlock (get: GetBlock, source: string): GetBlock {
  return async (cid, options) => {
    const bytes = await get(cid, options)
    if (cid.multihash.code !== SHA2_256) throw new IntegrityError(`${source}: block ${cid.toString()} uses a hash narswarm does not check`)
    if (!blockMatches(cid, bytes)) throw new IntegrityError(`${source}: block ${cid.toString()} does not match its CID`)
    return bytes
  }
}

/** Decodes a block of a UnixFS file (root or interior) into its size and pieces. */
export function decodeFileNode (cid: CID, block: Uint8Array): FileRoot {
  if (cid.code === RAW) return { size: block.length, pieces: [{ bytes: block }] }
  if (cid.code !== DAG_PB) throw new FormatError(`block ${cid.toString()} is neither raw nor dag-pb`)
  let node: dagPb.PBNode
  let unixfs: UnixFS
  try {
    node = dagPb.decode(block)
    if (node.Data === undefined) throw new Error('no UnixFS data')
    unixfs = UnixFS.unmarshal(node.Data)
  } catch (err) {
    throw new FormatError(`block ${cid.toString()} is not a UnixFS node: ${(err as Error).message}`)
  }
  if (unixfs.type !== 'file' && unixfs.type !== 'raw') throw new FormatError(`${cid.toString()} is a UnixFS ${unixfs.type}, not a file`)
  if (node.Links.length !== unixfs.blockSizes.length) throw new FormatError(`${cid.toString()}: ${node.Links.length} links but ${unixfs.blockSizes.length} block sizes`)
  const pieces: Piece[] = []
  if (unixfs.data !== undefined && unixfs.data.length > 0) pieces.push({ bytes: unixfs.data })
  node.Links.forEach((link, i) => pieces.push({ cid: link.Hash, size: Number(unixfs.blockSizes[i]) }))
  return { size: Number(unixfs.fileSize()), pieces }
}

/**
 * The file's bytes, in order. `root` is the already-fetched and decoded root block (fetching it is
 * how `open` learns that the file exists and how big it is).
 */
export async function * readFile (root: FileRoot, getBlock: GetBlock, options: { signal?: AbortSignal, readAhead: number }): AsyncGenerator<Uint8Array> {
  // Aborted when the reader stops early, so that requests still in flight are dropped.
  const controller = new AbortController()
  const signal = options.signal === undefined ? controller.signal : AbortSignal.any([controller.signal, options.signal])
  const plan = leaves(root, getBlock, signal)
  const window: Array<Promise<BlockBytes>> = []
  let planDone = false
  // Slow start: the first leaf is asked for alone, so that a peer sends it at once instead of
  // batching it with the next ones (time to first byte); the window then doubles per leaf.
  let limit = 1
  const fill = async (): Promise<void> => {
    while (!planDone && window.length < limit) {
      const next = await plan.next()
      if (next.done === true) { planDone = true; break }
      const piece = next.value
      const pending = 'bytes' in piece ? Promise.resolve(piece.bytes) : fetchLeaf(piece, getBlock, signal)
      pending.catch(() => {}) // observed when its turn comes; never an unhandled rejection
      window.push(pending)
    }
  }
  try {
    for (;;) {
      await fill()
      const head = window.shift()
      if (head === undefined) return
      const bytes = await head
      limit = Math.min(limit * 2, options.readAhead)
      // Blocks already in the window must not outlive a caller's abort.
      options.signal?.throwIfAborted()
      for (const piece of pieces(bytes)) {
        if (piece.length > 0) yield piece
      }
    }
  } finally {
    controller.abort(new Error('reader stopped'))
    await plan.return(undefined).catch(() => {})
  }
}

async function fetchLeaf ({ cid, size, offset }: Placed, getBlock: GetBlock, signal: AbortSignal): Promise<BlockBytes> {
  const bytes = await getBlock(cid, { signal, offset })
  const length = byteLength(bytes)
  if (length !== size) throw new IntegrityError(`${cid.toString()}: leaf holds ${length} bytes, its parent says ${size}`)
  return bytes
}

/** A child block and the file offset its bytes start at. */
type Placed = { cid: CID, size: number, offset: number }

/** A node's pieces with the file offset each starts at, the node starting at `offset`. */
export function placedPieces (node: FileRoot, offset: number): Array<({ bytes: Uint8Array } | { cid: CID, size: number }) & { offset: number }> {
  let at = offset
  return node.pieces.map(piece => {
    const placed = { ...piece, offset: at }
    at += 'bytes' in piece ? piece.bytes.length : piece.size
    return placed
  })
}

/**
 * The file's pieces in order, reading interior (dag-pb with links) nodes as the walk reaches them;
 * raw leaves are left to the reader's window.
 */
async function * leaves (node: FileRoot, getBlock: GetBlock, signal: AbortSignal, offset = 0): AsyncGenerator<{ bytes: Uint8Array } | Placed> {
  for (const piece of placedPieces(node, offset)) {
    if ('bytes' in piece || piece.cid.code === RAW) { yield piece; continue }
    const child = decodeFileNode(piece.cid, contiguous(await getBlock(piece.cid, { signal, offset: piece.offset })))
    if (child.size !== piece.size) throw new IntegrityError(`${piece.cid.toString()}: node holds ${child.size} bytes, its parent says ${piece.size}`)
    yield * leaves(child, getBlock, signal, piece.offset)
  }
}
