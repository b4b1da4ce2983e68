/**
 * Chunk bytes on disk, under `chunks/` in the state directory: records in pack files
 * (`packs/<id>.pack`, written by pack-writer.ts; chunk-file.ts has a record's layout), found where
 * the index row says. Stores made before packs hold a file per chunk (`<2 hex>/<64 hex>`, the
 * same layout as a record): those are still read, and removed when their chunk goes. A read
 * hashes the record again (a compressed one as it is stored, against the hash kept of it; a raw
 * one against the chunk's name) and reports one that does not match as corrupt; it never returns
 * its bytes.
 */
import { hash } from 'node:crypto'
import { closeSync, openSync, readSync, unlinkSync } from 'node:fs'
import { mkdir, readdir, rm, rmdir, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { StorageError } from '../errors.ts'
import { isAlive } from '../util/process.ts'
import { chunkPath, ChunkFileError, decodeChunkFile, ZSTD } from './chunk-file.ts'
import { packPath, PackWriter, type PackRegistry, type StoredChunk } from './pack-writer.ts'
import { rawFrame } from '../nix/zstd-frames.ts'

/** Where a chunk is and what it is, as its index row says. */
export interface ChunkAt {
  hex: string
  size: number
  storedSize: number
  storedHash: Uint8Array | undefined
  /** Its pack, or undefined for a chunk in a file of its own. */
  pack: number | undefined
  offset: number
}

/** Open read handles of packs: a render reads many records of few packs. */
const PACK_HANDLES = 32
const PACK_NAME = /^(\d+)\.pack$/

const HEX64 = /^[0-9a-f]{64}$/
/** The fan-out directories, `00` to `ff`, by the first byte of the chunk id (index = that byte). */
export const FAN_OUT: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

export function hexOf (id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.length).toString('hex')
}

export function chunkIdOf (bytes: Uint8Array): Uint8Array {
  const d = hash('sha256', bytes, 'buffer')
  return new Uint8Array(d.buffer, d.byteOffset, d.length)
}

/** A chunk file that is not what its name says (wrong hash, bad header, truncated). */
export class CorruptChunk extends Error {
  readonly hex: string
  constructor (hex: string, why: string) {
    super(`chunk ${hex} is corrupt: ${why}`)
    this.hex = hex
  }
}

export class ChunkFiles {
  readonly root: string
  readonly tmp: string
  readonly packs: string
  #scratch = Buffer.allocUnsafe(0)

  readonly #fsync: boolean
  readonly #registry: PackRegistry
  readonly #packBytes: number | undefined
  #writer: PackWriter | undefined
  /** Read handles by pack id, least recently used first. */
  readonly #handles = new Map<number, number>()

  /** `fsync: false` skips the wait for the disk (benchmarks that measure other things). */
  constructor (root: string, registry: PackRegistry, options: { fsync?: boolean, packBytes?: number } = {}) {
    this.root = root
    this.tmp = join(root, 'tmp')
    this.packs = join(root, 'packs')
    this.#registry = registry
    this.#fsync = options.fsync ?? true
    this.#packBytes = options.packBytes
  }

  async init (): Promise<void> {
    await mkdir(this.packs, { recursive: true })
  }

  /** The file of a chunk stored on its own (stores made before packs). */
  path (hex: string): string {
    return chunkPath(this.root, hex)
  }

  packPath (id: number): string {
    return packPath(this.packs, id)
  }

  /** The pack records are appended to now, if one is open in this process. */
  get activePack (): number | undefined { return this.#writer?.activePack }

  /** Whether this process may still write records into the pack, or index one in it (pack-writer.ts). */
  isOpen (id: number): boolean { return this.#writer?.isOpen(id) ?? false }

  /** A record `write` or `copyRecord` gave has its index row now (or never will). */
  indexed (pack: number): void { this.#writer?.indexed(pack) }

  #packWriter (): PackWriter {
    this.#writer ??= new PackWriter({ dir: this.packs, fsync: this.#fsync, registry: this.#registry, ...(this.#packBytes === undefined ? {} : { packBytes: this.#packBytes }) })
    return this.#writer
  }

  /**
   * Writes a chunk whose id was already computed; resolves once it is durable. `bytes` is copied
   * before this returns, so the caller may reuse it. `compressed`: a zstd frame of `bytes` already
   * checked (`decodeChunkFile`), stored as it is instead of compressing `bytes` again. `written`
   * is called once the record has landed, before it is durable.
   */
  async write (hex: string, bytes: Uint8Array, compressed?: Uint8Array, written?: () => void): Promise<StoredChunk> {
    try {
      return await this.#packWriter().write(bytes, compressed, written)
    } catch (err) {
      throw storageError(`cannot store chunk ${hex}`, err)
    }
  }

  /** Copies a record, as `readStored` gives it, into the active pack (compaction); where it went. */
  async copyRecord (record: Uint8Array): Promise<{ pack: number, offset: number }> {
    try {
      return await this.#packWriter().append(record[0]!, record.subarray(1))
    } catch (err) {
      throw storageError('cannot copy a chunk record', err)
    }
  }

  /** Seals the active pack when no write is under way in it (maintenance, to reclaim it). */
  async retire (id: number): Promise<boolean> {
    return await (this.#writer?.retire(id) ?? Promise.resolve(false))
  }

  /** Waits for the writes asked for and seals their packs; a later write starts afresh. */
  async close (): Promise<void> {
    const writer = this.#writer
    this.#writer = undefined
    await writer?.close()
    for (const fd of this.#handles.values()) closeSync(fd)
    this.#handles.clear()
  }

  /**
   * The chunk's bytes (`size` of them), checked again; undefined when its pack or file is not
   * there. Throws CorruptChunk when the record does not hold them, StorageError when it cannot be
   * read. `verify: false` skips the check, for a caller that checks a whole NAR made of these bytes.
   */
  read (at: ChunkAt, verify = true): Uint8Array | undefined {
    const n = this.#readFile(at)
    if (n === undefined) return undefined
    // A compressed record is checked as it is stored when its hash was kept: those bytes are the
    // frame made from (or, from a peer, decoded to) the chunk's bytes when it was written, and
    // decoding them again gives the same bytes; hashing the compressed body costs a third of
    // hashing the chunk. `check` (cache verify) hashes both.
    if (verify && at.storedHash !== undefined && this.#compressed(n, at.size)) {
      this.#checkStored(at.hex, this.#scratch.subarray(1, n), at.storedHash)
      return this.#decode(at.hex, n, at.size, false)
    }
    return this.#decode(at.hex, n, at.size, verify)
  }

  /**
   * The chunk as zstd frames: a compressed file's body as it is (one frame), checked against
   * `storedHash` without decompressing it; a raw one checked against its name and wrapped in a
   * raw frame. A compressed chunk with no `storedHash` (written before it was kept) is
   * decompressed to be checked. Undefined and throws as `read` does.
   */
  readFrames (at: ChunkAt): Uint8Array[] | undefined {
    const n = this.#readFile(at)
    if (n === undefined) return undefined
    if (!this.#compressed(n, at.size)) return rawFrame(this.#decode(at.hex, n, at.size, true))
    this.#checkAsStored(at, n)
    return [Uint8Array.prototype.slice.call(this.#scratch, 1, n)]
  }

  /**
   * The chunk's file as it is, header and body, for a peer (chunk-file.ts): checked as
   * `readFrames` checks it. Undefined and throws as `read` does.
   */
  readStored (at: ChunkAt): Uint8Array | undefined {
    const n = this.#readFile(at)
    if (n === undefined) return undefined
    this.#checkAsStored(at, n)
    return Uint8Array.prototype.slice.call(this.#scratch, 0, n)
  }

  /**
   * Both checks a render can make, from one read of the file: a compressed body against
   * `storedHash`, and the bytes against the chunk's name. False when there is no such file;
   * throws as `read` does.
   */
  check (at: ChunkAt): boolean {
    const n = this.#readFile(at)
    if (n === undefined) return false
    if (at.storedHash !== undefined && this.#compressed(n, at.size)) this.#checkStored(at.hex, this.#scratch.subarray(1, n), at.storedHash)
    this.#decode(at.hex, n, at.size, true, false)
    return true
  }

  /** Whether the `n` bytes of a file in the scratch buffer are a compressed chunk of `size` bytes. */
  #compressed (n: number, size: number): boolean {
    return this.#scratch[0] === ZSTD && n > 1 && n <= size + 1
  }

  /**
   * The cheapest check of the file in the scratch buffer, for bytes that go out as they are
   * stored: a compressed body against `storedHash` (not decompressed), else its bytes against the
   * chunk's name.
   */
  #checkAsStored (at: ChunkAt, n: number): void {
    if (at.storedHash !== undefined && this.#compressed(n, at.size)) this.#checkStored(at.hex, this.#scratch.subarray(1, n), at.storedHash)
    else this.#decode(at.hex, n, at.size, true, false)
  }

  /** A compressed file's body against the hash kept when it was written. */
  #checkStored (hex: string, body: Uint8Array, storedHash: Uint8Array): void {
    if (!hash('sha256', body, 'buffer').equals(storedHash)) throw new CorruptChunk(hex, 'its compressed bytes do not match their hash')
  }

  /**
   * The chunk's bytes from the `n` bytes of its file in the scratch buffer: a copy, since the buffer
   * is reused, unless `copy` is false (a caller that only checks them).
   */
  #decode (hex: string, n: number, size: number, verify: boolean, copy = true): Uint8Array {
    let bytes: Uint8Array
    try {
      bytes = decodeChunkFile(this.#scratch.subarray(0, n), size)
    } catch (err) {
      if (err instanceof ChunkFileError) throw new CorruptChunk(hex, err.message)
      throw err
    }
    if (copy && bytes.buffer === this.#scratch.buffer) bytes = Uint8Array.prototype.slice.call(bytes)
    if (verify && hash('sha256', bytes, 'hex') !== hex) throw new CorruptChunk(hex, 'its bytes do not hash to its name')
    return bytes
  }

  /**
   * Reads a chunk's record into the scratch buffer; its length, or undefined when its file (or
   * pack) is not there. A record in a pack is read where the index says, `storedSize` bytes (a
   * pack cut short gives fewer, which fail as corrupt). A file of its own: raw takes 1 + size
   * bytes, compressed at most 1 + 7/8 of that, so one read is enough. One reused buffer, so a
   * chunk costs one allocation: the bytes handed out. Synchronous: from the page cache a record
   * reads in microseconds, where a thread-pool round trip measured ten times that under load.
   */
  #readFile (at: ChunkAt): number | undefined {
    const room = at.pack === undefined ? at.size + 2 : at.storedSize
    if (this.#scratch.length < room) this.#scratch = Buffer.allocUnsafe(Math.max(room, at.size + 2))
    try {
      if (at.pack !== undefined) {
        const fd = this.#handle(at.pack)
        return fd === undefined ? undefined : readSync(fd, this.#scratch, 0, at.storedSize, at.offset)
      }
      const fd = openSync(this.path(at.hex), 'r')
      try {
        return readSync(fd, this.#scratch, 0, this.#scratch.length, 0)
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw storageError(`cannot read chunk ${at.hex}`, err)
    }
  }

  /** A read handle of a pack, kept open for the next records; undefined when there is no such pack. */
  #handle (pack: number): number | undefined {
    let fd = this.#handles.get(pack)
    if (fd !== undefined) {
      this.#handles.delete(pack)
      this.#handles.set(pack, fd)
      return fd
    }
    try {
      fd = openSync(this.packPath(pack), 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    this.#handles.set(pack, fd)
    if (this.#handles.size > PACK_HANDLES) {
      const [oldest, old] = this.#handles.entries().next().value!
      this.#handles.delete(oldest)
      closeSync(old)
    }
    return fd
  }

  /** Deletes a pack file, closing its read handle in the same step. */
  removePack (id: number): void {
    this.#dropHandle(id)
    try {
      unlinkSync(this.packPath(id))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storageError(`cannot remove pack ${id}`, err)
    }
  }

  /** Closes the read handles of packs the index no longer names (another process removed them: a handle keeps their space allocated). */
  closeHandlesExcept (packs: ReadonlySet<number>): void {
    for (const id of [...this.#handles.keys()]) if (!packs.has(id)) this.#dropHandle(id)
  }

  #dropHandle (id: number): void {
    const fd = this.#handles.get(id)
    if (fd === undefined) return
    this.#handles.delete(id)
    closeSync(fd)
  }

  /** The pack files on disk (id → bytes), and what else lies in the packs directory. */
  async listPacks (): Promise<{ packs: Map<number, number>, strays: string[] }> {
    const packs = new Map<number, number>()
    const strays: string[] = []
    for (const name of await readdir(this.packs).catch(() => [] as string[])) {
      const path = join(this.packs, name)
      const id = PACK_NAME.exec(name)?.[1]
      if (id === undefined) { strays.push(path); continue }
      try {
        packs.set(Number(id), (await stat(path)).size)
      } catch {}
    }
    return { packs, strays }
  }

  async remove (hex: string): Promise<void> {
    await unlink(this.path(hex)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw storageError(`cannot remove chunk ${hex}`, err)
    })
  }

  /**
   * What lies under the root besides the fan-out directories, `packs` and `tmp` (before packs),
   * and whether any fan-out directory exists (the layout before packs, or files put there since).
   */
  async rootEntries (): Promise<{ strays: string[], fanOut: boolean }> {
    const names = await readdir(this.root)
    return {
      strays: names.filter(name => name !== 'tmp' && name !== 'packs' && !FAN_OUT.includes(name)).map(name => join(this.root, name)),
      fanOut: names.some(name => FAN_OUT.includes(name))
    }
  }

  /** The chunk files of one fan-out directory (`FAN_OUT`); anything else in it is a stray. */
  async listDir (dir: string): Promise<{ chunks: Set<string>, strays: string[] }> {
    const chunks = new Set<string>()
    const strays: string[] = []
    let names: string[]
    try {
      names = await readdir(join(this.root, dir))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { chunks, strays }
      throw err
    }
    for (const name of names) {
      if (HEX64.test(name) && name.startsWith(dir)) chunks.add(name)
      else strays.push(join(this.root, dir, name))
    }
    return { chunks, strays }
  }

  /**
   * Removes the temporary files of the layout before packs (`tmp/<pid>-…`) whose writer is gone
   * (a live older narswarm may still be writing), and the directory once it is empty.
   */
  async removeDeadTemps (): Promise<number> {
    let names: string[]
    try {
      names = await readdir(this.tmp)
    } catch {
      return 0
    }
    let removed = 0
    for (const name of names) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1])
      if (pid === process.pid || (Number.isInteger(pid) && isAlive(pid))) continue
      await rm(join(this.tmp, name), { force: true })
      removed++
    }
    if (removed === names.length) await rmdir(this.tmp).catch(() => {})
    return removed
  }

  async ageOf (path: string): Promise<number> {
    try {
      return Date.now() - (await stat(path)).mtimeMs
    } catch {
      return 0
    }
  }
}

export function storageError (message: string, err: unknown): Error {
  if (err instanceof StorageError) return err
  const code = (err as NodeJS.ErrnoException).code
  return new StorageError(`${message}: ${code ?? (err as Error).message}`, { cause: err })
}
