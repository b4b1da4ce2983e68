/**
 * Chunk files on disk: `chunks/<2 hex>/<64 hex>` under the state directory, one file per chunk
 * (chunk-file.ts has its layout, chunk-writer.ts writes them on the thread pool). A write goes to
 * `chunks/tmp/<pid>-<random>-<n>.tmp`, is fsynced, then renamed into place, so a chunk file either is
 * whole or does not exist under its name; the index row comes after (the store's business). A
 * read hashes the bytes again and reports a chunk whose bytes do not match its name as corrupt;
 * it never returns them.
 */
import { hash } from 'node:crypto'
import { closeSync, openSync, readSync } from 'node:fs'
import { mkdir, readdir, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { StorageError } from '../errors.ts'
import { isAlive } from '../util/process.ts'
import { chunkPath, ChunkFileError, decodeChunkFile, ZSTD } from './chunk-file.ts'
import { ChunkWriter, type StoredChunk } from './chunk-writer.ts'
import { rawFrame } from '../nix/zstd-frames.ts'

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
  #scratch = Buffer.allocUnsafe(0)

  readonly #fsync: boolean
  #writer: ChunkWriter | undefined

  /** `fsync: false` skips the wait for the disk (benchmarks that measure other things). */
  constructor (root: string, options: { fsync?: boolean } = {}) {
    this.root = root
    this.tmp = join(root, 'tmp')
    this.#fsync = options.fsync ?? true
  }

  async init (): Promise<void> {
    await mkdir(this.tmp, { recursive: true })
  }

  path (hex: string): string {
    return chunkPath(this.root, hex)
  }

  /**
   * Writes a chunk whose id was already computed. `bytes` is copied before this returns, so the
   * caller may reuse it (chunk-writer.ts). `compressed`: a zstd frame of `bytes` already checked
   * (`decodeChunkFile`), stored as it is instead of compressing `bytes` again.
   */
  async write (hex: string, bytes: Uint8Array, compressed?: Uint8Array): Promise<StoredChunk> {
    this.#writer ??= new ChunkWriter({ root: this.root, tmp: this.tmp, fsync: this.#fsync })
    try {
      return await this.#writer.write(hex, bytes, compressed)
    } catch (err) {
      throw storageError(`cannot store chunk ${hex}`, err)
    }
  }

  /** Waits for the writes asked for; a later write starts afresh. */
  async close (): Promise<void> {
    const writer = this.#writer
    this.#writer = undefined
    await writer?.close()
  }

  /**
   * The chunk's bytes (`size` of them), hashed again; undefined when there is no such file.
   * Throws CorruptChunk when the file does not hold them, StorageError when it cannot be read.
   * `verify: false` skips the hash, for a caller that checks a whole NAR made of these bytes.
   * Synchronous: from the page cache a chunk reads in tens of microseconds, while a thread-pool
   * round trip per open, read and close measured ten times that under load.
   */
  read (hex: string, size: number, verify = true): Uint8Array | undefined {
    const n = this.#readFile(hex, size)
    return n === undefined ? undefined : this.#decode(hex, n, size, verify)
  }

  /**
   * The chunk as zstd frames: a compressed file's body as it is (one frame), checked against
   * `storedHash` without decompressing it; a raw one checked against its name and wrapped in a
   * raw frame. A compressed chunk with no `storedHash` (written before it was kept) is
   * decompressed to be checked. Undefined and throws as `read` does.
   */
  readFrames (hex: string, size: number, storedHash: Uint8Array | undefined): Uint8Array[] | undefined {
    const n = this.#readFile(hex, size)
    if (n === undefined) return undefined
    if (!this.#compressed(n, size)) return rawFrame(this.#decode(hex, n, size, true))
    this.#checkAsStored(hex, n, size, storedHash)
    return [Uint8Array.prototype.slice.call(this.#scratch, 1, n)]
  }

  /**
   * The chunk's file as it is, header and body, for a peer (chunk-file.ts): checked as
   * `readFrames` checks it. Undefined and throws as `read` does.
   */
  readStored (hex: string, size: number, storedHash: Uint8Array | undefined): Uint8Array | undefined {
    const n = this.#readFile(hex, size)
    if (n === undefined) return undefined
    this.#checkAsStored(hex, n, size, storedHash)
    return Uint8Array.prototype.slice.call(this.#scratch, 0, n)
  }

  /**
   * Both checks a render can make, from one read of the file: a compressed body against
   * `storedHash`, and the bytes against the chunk's name. False when there is no such file;
   * throws as `read` does.
   */
  check (hex: string, size: number, storedHash: Uint8Array | undefined): boolean {
    const n = this.#readFile(hex, size)
    if (n === undefined) return false
    if (storedHash !== undefined && this.#compressed(n, size)) this.#checkStored(hex, this.#scratch.subarray(1, n), storedHash)
    this.#decode(hex, n, size, true, false)
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
  #checkAsStored (hex: string, n: number, size: number, storedHash: Uint8Array | undefined): void {
    if (storedHash !== undefined && this.#compressed(n, size)) this.#checkStored(hex, this.#scratch.subarray(1, n), storedHash)
    else this.#decode(hex, n, size, true, false)
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
   * Reads a chunk file into the scratch buffer; its length, or undefined when there is none.
   * Raw takes 1 + size bytes, compressed at most 1 + 7/8 of that: one read is enough. One reused
   * buffer, so a chunk costs one allocation: the bytes handed out.
   */
  #readFile (hex: string, size: number): number | undefined {
    if (this.#scratch.length < size + 2) this.#scratch = Buffer.allocUnsafe(size + 2)
    try {
      const fd = openSync(this.path(hex), 'r')
      try {
        return readSync(fd, this.#scratch, 0, this.#scratch.length, 0)
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw storageError(`cannot read chunk ${hex}`, err)
    }
  }

  async remove (hex: string): Promise<void> {
    await unlink(this.path(hex)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw storageError(`cannot remove chunk ${hex}`, err)
    })
  }

  /** What lies under the root besides the fan-out directories and `tmp`. */
  async strays (): Promise<string[]> {
    return (await readdir(this.root)).filter(name => name !== 'tmp' && !FAN_OUT.includes(name)).map(name => join(this.root, name))
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

  /** Removes temporary files whose writer is gone (another live process may be writing). */
  async removeDeadTemps (): Promise<number> {
    let removed = 0
    for (const name of await readdir(this.tmp)) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1])
      if (pid === process.pid || (Number.isInteger(pid) && isAlive(pid))) continue
      await rm(join(this.tmp, name), { force: true })
      removed++
    }
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
