/**
 * The torrent of one NAR, built the same way by every publisher so that the same NAR always has
 * the same info hash (the info hash is the key other narswarms look up, so these parameters are
 * part of the index format):
 *
 *   info = { length: NarSize, name: "<nix32 NarHash>.nar", "piece length": 1048576, pieces }
 *
 * a single-file BitTorrent v1 torrent of the uncompressed NAR; no `private` flag, no other keys in
 * the info dictionary; `pieces` is the SHA-1 of every 1 MiB piece (the last one shorter). The
 * .torrent file around it adds `announce`/`announce-list` (the trackers) and `url-list` (BEP 19 web
 * seeds); those are outside the info dictionary and do not change the hash.
 *
 * Hashing is incremental (`PieceHasher`), so a NAR is hashed into pieces while it streams to disk.
 */
import { createHash, type Hash } from 'node:crypto'
import { FormatError } from '../../errors.ts'
import { bdecode, bencode, type BValue } from './bencode.ts'

export const DEFAULT_PIECE_LENGTH = 1 << 20

export interface Info {
  name: string
  length: number
  pieceLength: number
  /** Concatenated 20-byte SHA-1 digests. */
  pieces: Uint8Array
}

/** SHA-1 of every `pieceLength` bytes of a stream, fed in chunks of any size. */
export class PieceHasher {
  readonly pieceLength: number
  #hash: Hash = createHash('sha1')
  #inPiece = 0
  #length = 0
  readonly #digests: Uint8Array[] = []

  constructor (pieceLength: number) {
    this.pieceLength = pieceLength
  }

  get length (): number { return this.#length }

  update (chunk: Uint8Array): void {
    let offset = 0
    while (offset < chunk.length) {
      const take = Math.min(this.pieceLength - this.#inPiece, chunk.length - offset)
      this.#hash.update(chunk.subarray(offset, offset + take))
      this.#inPiece += take
      offset += take
      if (this.#inPiece === this.pieceLength) this.#endPiece()
    }
    this.#length += chunk.length
  }

  /** The `pieces` string; the hasher must not be used afterwards. */
  finish (): Uint8Array {
    if (this.#inPiece > 0) this.#endPiece()
    return Buffer.concat(this.#digests)
  }

  #endPiece (): void {
    this.#digests.push(this.#hash.digest())
    this.#hash = createHash('sha1')
    this.#inPiece = 0
  }
}

export function infoDictionary (info: Info): BValue {
  return { length: info.length, name: info.name, 'piece length': info.pieceLength, pieces: info.pieces }
}

/** The v1 info hash (hex, lower case) of an info dictionary. */
export function infoHashOf (info: Info): string {
  return createHash('sha1').update(bencode(infoDictionary(info))).digest('hex')
}

/** A .torrent file: the info dictionary with trackers and web seeds. */
export function torrentFile (info: Info, trackers: readonly string[], webSeeds: readonly string[]): Uint8Array {
  const meta: Record<string, BValue> = { info: infoDictionary(info) }
  if (trackers.length > 0) {
    meta.announce = trackers[0]!
    meta['announce-list'] = trackers.map(t => [t])
  }
  if (webSeeds.length > 0) meta['url-list'] = [...webSeeds]
  return bencode(meta)
}

export interface ParsedTorrent {
  infoHash: string
  info: Info
  trackers: string[]
  webSeeds: string[]
}

/** Reads a single-file .torrent file; FormatError for anything else. */
export function parseTorrentFile (bytes: Uint8Array): ParsedTorrent {
  const { value, raw } = bdecode(bytes, 'info')
  if (typeof value !== 'object' || value instanceof Uint8Array || Array.isArray(value) || raw === undefined) {
    throw new FormatError('torrent file: no info dictionary')
  }
  const info = value.info as Record<string, BValue>
  const name = info.name
  const length = info.length
  const pieceLength = info['piece length']
  const pieces = info.pieces
  if (!(name instanceof Uint8Array) || typeof length !== 'number' || typeof pieceLength !== 'number' || !(pieces instanceof Uint8Array) || 'files' in info) {
    throw new FormatError('torrent file: not a single-file torrent')
  }
  if (pieces.length !== 20 * Math.ceil(length / pieceLength)) throw new FormatError('torrent file: piece count does not match the length')
  const text = (v: BValue): string[] => v instanceof Uint8Array ? [Buffer.from(v).toString('utf8')] : Array.isArray(v) ? v.flatMap(text) : []
  const trackers = [...new Set([...text(value.announce ?? []), ...text(value['announce-list'] ?? [])])]
  return {
    infoHash: createHash('sha1').update(raw).digest('hex'),
    info: { name: Buffer.from(name).toString('utf8'), length, pieceLength, pieces },
    trackers,
    webSeeds: text(value['url-list'] ?? [])
  }
}
