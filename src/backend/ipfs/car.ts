/**
 * CAR v1 (content-addressed archive), the streaming form of a DAG that trustless gateways answer
 * with: a varint-prefixed dag-cbor header `{ version: 1, roots: [cid] }`, then one section per
 * block, `varint(len(cid) + len(bytes)) · cid · bytes`.
 *
 * The reader is written for bytes from strangers: it pulls from its source only as the caller
 * takes blocks (so a fast sender cannot fill memory), refuses a header or a section larger than
 * its limit before buffering it, and does not believe any CID it reads — the caller hashes every
 * block against the CID it expected. Sections are never trusted to be in any order.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { varint } from 'multiformats'
import { CID } from 'multiformats/cid'
import { FormatError } from '../../errors.ts'
import { ByteReader } from '../../util/byte-reader.ts'
import { contiguous, type BlockBytes } from './block-bytes.ts'

export interface CarBlock { cid: CID, bytes: Uint8Array }

/** A block read from a CAR stream: its bytes are the pieces of the reads they came in, not copied. */
export interface CarSection { cid: CID, bytes: BlockBytes }

/** Enough of a section to hold any CID narswarm reads (sha2-256 CIDs take 36 bytes). */
const CID_ROOM = 128
/** Pieces smaller than this on average are joined (network reads are 16–64 KiB). */
const MIN_PIECE = 8 << 10

/** The largest dag-cbor header accepted: a header names roots, nothing more. */
const MAX_HEADER = 64 << 10

/** The CAR header naming `root`, ready to send. */
export function carHeader (root: CID): Uint8Array {
  return withLength(dagCbor.encode({ version: 1, roots: [root] }))
}

/** One block's section, as two buffers (the prefix, then the block's own bytes, not copied). */
export function carSection (block: CarBlock): [Uint8Array, Uint8Array] {
  const length = block.cid.bytes.length + block.bytes.length
  const prefix = new Uint8Array(varint.encodingLength(length) + block.cid.bytes.length)
  varint.encodeTo(length, prefix)
  prefix.set(block.cid.bytes, prefix.length - block.cid.bytes.length)
  return [prefix, block.bytes]
}

function withLength (bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(varint.encodingLength(bytes.length) + bytes.length)
  varint.encodeTo(bytes.length, out)
  out.set(bytes, out.length - bytes.length)
  return out
}

/**
 * Reads a CAR stream: resolves with its roots once the header is in, and gives its blocks one at
 * a time. `maxBlock` bounds a section (CID and bytes); anything malformed is a FormatError.
 */
export async function readCar (source: AsyncIterable<Uint8Array>, maxBlock: number): Promise<{ roots: CID[], blocks: AsyncGenerator<CarSection> }> {
  const bytes = new ByteReader(source)
  const headerLength = await readVarint(bytes)
  if (headerLength === undefined) throw new FormatError('CAR stream is empty')
  if (headerLength > MAX_HEADER) throw new FormatError(`CAR header of ${headerLength} bytes is too large`)
  const headerBytes = await bytes.read(headerLength)
  if (headerBytes === undefined) throw short(bytes, headerLength)
  let header: { version?: unknown, roots?: unknown }
  try {
    header = dagCbor.decode(headerBytes)
  } catch (err) {
    throw err instanceof FormatError ? err : new FormatError(`CAR header is not dag-cbor: ${(err as Error).message}`)
  }
  if (header?.version !== 1) throw new FormatError(`CAR version ${String(header?.version)} is not 1`)
  const roots = Array.isArray(header.roots) ? header.roots.map(r => CID.asCID(r)) : []
  if (roots.length === 0 || roots.some(r => r === null)) throw new FormatError('CAR header has no valid roots')
  async function * blocks (): AsyncGenerator<CarSection> {
    try {
      for (;;) {
        const length = await readVarint(bytes)
        if (length === undefined) return
        if (length > maxBlock) throw new FormatError(`CAR section of ${length} bytes exceeds ${maxBlock}`)
        let section = await bytes.pieces(length)
        if (section === undefined) throw short(bytes, length)
        // The CID is read from the first piece: one too short to hold it (rare) is joined first. So
        // are pieces smaller than MIN_PIECE on average, which only a sender that splits its data
        // into tiny frames produces: kept apart, each would cost more memory than its bytes.
        if (section.length > 1 && (section[0]!.length < CID_ROOM || length / section.length < MIN_PIECE)) section = [contiguous(section)]
        let cid: CID
        let rest: Uint8Array
        try {
          [cid, rest] = CID.decodeFirst(section[0] ?? new Uint8Array(0))
        } catch (err) {
          throw new FormatError(`CAR section has no valid CID: ${(err as Error).message}`)
        }
        const block = rest.length > 0 ? [rest, ...section.slice(1)] : section.slice(1)
        yield { cid, bytes: block.length === 1 ? block[0]! : block.length === 0 ? rest : block }
      }
    } finally {
      await bytes.close()
    }
  }
  return { roots: roots as CID[], blocks: blocks() }
}

/** A varint, or undefined at a clean end of the stream. */
async function readVarint (bytes: ByteReader): Promise<number | undefined> {
  for (let n = 1; n <= 9; n++) {
    if (!await bytes.fill(n)) {
      if (n === 1) return undefined
      throw new FormatError('CAR stream ends inside a varint')
    }
    if (bytes.peek(n)[n - 1]! < 0x80) return varint.decode(bytes.take(n))[0]
  }
  throw new FormatError('CAR varint is too long')
}

function short (bytes: ByteReader, n: number): FormatError {
  return new FormatError(`CAR stream ends ${n - bytes.buffered} bytes short`)
}
