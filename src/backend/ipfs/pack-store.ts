/**
 * The embedded node's block store: blocks appended to pack files and found through an index.
 *
 *   <repo>/packs/000001.pack   blocks back to back; the next pack starts once one passes 1 GiB
 *   <repo>/blocks.sqlite       multihash → pack, offset, length
 *
 * Storing a block is one positioned write and one index row; asking for a block that is not here
 * is one index lookup, without touching the disk. One file per block (the blockstore-fs layout used
 * before) cost an open, a write, a close, a rename and often a mkdir for every block, and those
 * metadata operations, not the bytes, set the pace: a node fetching from a fast peer stored blocks
 * slower than they arrived (docs/ipfs.md has the figures).
 *
 * Blocks are keyed by multihash, as before, so a CIDv0 and a CIDv1 of the same bytes are one
 * block. Nothing is fsynced: index rows that point past the end of their pack are dropped at
 * start-up, and every block read back is hashed against its CID; one that does not match (a write
 * lost in a crash) is dropped from the index and counts as absent, so it is fetched again rather
 * than served, and a put of it writes it again. Deleting drops the index row and leaves the bytes in their pack.
 * Blocks of a repository written one file per block (`<repo>/blocks/`) are still read. One
 * process at a time per repository, as for the rest of the repository.
 */
import { constants, existsSync } from 'node:fs'
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { BaseBlockstore } from 'blockstore-core/base'
import type { Pair } from 'interface-blockstore'
import { NotFoundError, PutFailedError } from 'interface-store'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { openDatabase } from '../../util/sqlite.ts'
import { BlockFiles } from './blockstore.ts'
import { blockBytes, blockMatches, byteLength } from './block-bytes.ts'
import { RAW, SHA2_256 } from './locator.ts'

/** A pack is closed to new blocks once it is this large. */
export const PACK_BYTES = 1 << 30

interface Row { pack: number, offset: number, length: number }

export class PackStore extends BaseBlockstore {
  readonly #dir: string
  readonly #packBytes: number
  #db: DatabaseSync | undefined
  #find!: StatementSync
  #insert!: StatementSync
  #remove!: StatementSync
  /** Open handles of the packs, read and written through (one per pack touched). */
  readonly #handles = new Map<number, Promise<FileHandle>>()
  /** The pack new blocks go to, and the offset of its end. */
  #pack = 1
  #end = 0
  /** Blocks being written, so that two puts of one block write it once. */
  readonly #writing = new Map<string, Promise<CID>>()
  #legacy: BlockFiles | undefined

  constructor (dir: string, options: { packBytes?: number } = {}) {
    super()
    this.#dir = dir
    this.#packBytes = options.packBytes ?? PACK_BYTES
  }

  async open (): Promise<void> {
    await mkdir(join(this.#dir, 'packs'), { recursive: true })
    const db = openDatabase(join(this.#dir, 'blocks.sqlite'))
    db.exec('CREATE TABLE IF NOT EXISTS blocks (multihash BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID')
    this.#find = db.prepare('SELECT pack, offset, length FROM blocks WHERE multihash = ?')
    this.#insert = db.prepare('INSERT OR IGNORE INTO blocks (multihash, pack, offset, length) VALUES (?, ?, ?, ?)')
    this.#remove = db.prepare('DELETE FROM blocks WHERE multihash = ?')
    this.#db = db
    // Appending resumes at the end of the newest pack on disk: bytes written after the last index
    // row (a crash) are skipped, never overwritten by a block the index would then misplace.
    const numbers = (await readdir(join(this.#dir, 'packs'))).flatMap(name => /^(\d+)\.pack$/.exec(name)?.[1] ?? []).map(Number)
    this.#pack = Math.max(1, ...numbers)
    this.#end = await this.#packSize(this.#pack)
    // A crash can leave index rows for bytes that never reached a pack (or a pack cut short):
    // those rows go, so that the index never says a block is here when it cannot be read. One
    // pass over the index finds the packs concerned; only those are touched.
    const ends = db.prepare('SELECT pack, MAX(offset + length) AS end FROM blocks GROUP BY pack').all() as Array<{ pack: number, end: number }>
    const dropPast = db.prepare('DELETE FROM blocks WHERE pack = ? AND offset + length > ?')
    for (const { pack, end } of ends) {
      const size = await this.#packSize(pack)
      if (end > size) dropPast.run(pack, size)
    }
    if (existsSync(join(this.#dir, 'blocks'))) {
      this.#legacy = new BlockFiles(join(this.#dir, 'blocks'))
      await this.#legacy.open()
    }
  }

  /** The block, or undefined when it is not here (or what is here does not match its CID). */
  async read (cid: CID): Promise<Uint8Array | undefined> {
    const row = this.#row(cid)
    if (row === undefined) {
      const old = await this.#legacy?.read(cid)
      return old !== undefined && intact(cid, old) ? old : undefined
    }
    const handle = await this.#handle(row.pack)
    const bytes = Buffer.allocUnsafe(row.length)
    let got = 0
    while (got < row.length) {
      const { bytesRead } = await handle.read(bytes, got, row.length - got, row.offset + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    if (got === row.length && intact(cid, bytes)) return bytes
    this.#remove.run(cid.multihash.bytes)
    return undefined
  }

  override async has (cid: CID): Promise<boolean> {
    return this.#row(cid) !== undefined || (await this.#legacy?.has(cid) ?? false)
  }

  override async * get (cid: CID, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    options.signal?.throwIfAborted()
    const bytes = await this.read(cid)
    if (bytes === undefined) throw new NotFoundError(`block ${cid.toString()} is not here`)
    yield bytes
  }

  override async put (cid: CID, bytes: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>, options: { signal?: AbortSignal } = {}): Promise<CID> {
    options.signal?.throwIfAborted()
    const key = Buffer.from(cid.multihash.bytes).toString('base64')
    const writing = this.#writing.get(key)
    if (writing !== undefined) return await writing
    // A block is written again when what the index points at does not read back intact.
    if (this.#row(cid) !== undefined && await this.read(cid) !== undefined) return cid
    // A list of pieces (a block as it came off the network) is written as it is, without joining.
    const write = (async () => await this.#append(cid, bytes instanceof Uint8Array ? [bytes] : Array.isArray(bytes) ? bytes : [await blockBytes(bytes)]))()
    this.#writing.set(key, write)
    try {
      return await write
    } finally {
      this.#writing.delete(key)
    }
  }

  async #append (cid: CID, pieces: Uint8Array[]): Promise<CID> {
    const length = byteLength(pieces)
    // The place is taken at once, so writes of several blocks run side by side.
    if (this.#end > 0 && this.#end + length > this.#packBytes) {
      this.#pack++
      this.#end = 0
    }
    const pack = this.#pack
    const offset = this.#end
    this.#end += length
    try {
      const handle = await this.#handle(pack)
      let done = (await handle.writev(pieces, offset)).bytesWritten
      if (done < length) {
        // A short write (rare for files): the rest, joined, until it is all there.
        const rest = Buffer.concat(pieces).subarray(done)
        for (let at = 0; at < rest.length;) {
          at += (await handle.write(rest, at, rest.length - at, offset + done + at)).bytesWritten
        }
        done = length
      }
      this.#insert.run(cid.multihash.bytes, pack, offset, length)
      return cid
    } catch (err) {
      throw new PutFailedError(`block ${cid.toString()}: ${(err as Error).message}`)
    }
  }

  override async delete (cid: CID): Promise<void> {
    this.#remove.run(cid.multihash.bytes)
    await this.#legacy?.delete(cid)
  }

  override async * getAll (options: { signal?: AbortSignal } = {}): AsyncGenerator<Pair> {
    const rows = this.#db!.prepare('SELECT multihash FROM blocks').all() as Array<{ multihash: Uint8Array }>
    for (const { multihash } of rows) {
      const cid = CID.createV1(RAW, Digest.decode(multihash))
      yield { cid, bytes: this.get(cid, options) }
    }
    if (this.#legacy !== undefined) yield * this.#legacy.getAll(options)
  }

  async close (): Promise<void> {
    await Promise.all([...this.#handles.values()].map(async h => { await (await h).close() }))
    this.#handles.clear()
    this.#db?.close()
    this.#db = undefined
    await this.#legacy?.close()
  }

  #row (cid: CID): Row | undefined {
    return this.#find.get(cid.multihash.bytes) as Row | undefined
  }

  /** A pack's size on disk; 0 when it is not there. */
  async #packSize (pack: number): Promise<number> {
    return await stat(this.#packPath(pack)).then(s => s.size, () => 0)
  }

  #packPath (pack: number): string {
    return join(this.#dir, 'packs', `${String(pack).padStart(6, '0')}.pack`)
  }

  async #handle (pack: number): Promise<FileHandle> {
    let handle = this.#handles.get(pack)
    if (handle === undefined) {
      // Not O_APPEND: positioned writes must land where the index says.
      handle = open(this.#packPath(pack), constants.O_RDWR | constants.O_CREAT)
      this.#handles.set(pack, handle)
      handle.catch(() => this.#handles.delete(pack))
    }
    return await handle
  }
}

/** Whether `bytes` are the block `cid` names; blocks under hashes narswarm does not check pass. */
function intact (cid: CID, bytes: Uint8Array): boolean {
  return cid.multihash.code !== SHA2_256 || blockMatches(cid, bytes)
}
