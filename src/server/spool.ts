/**
 * A spool: the bytes of one NAR fetch, written once by the fetch and read at any offset by every
 * request that shares it, so followers tail the fetch instead of starting their own and memory
 * stays bounded whatever the NAR's size. The file is unlinked as soon as it is open: nothing
 * outlives the process, and its space returns when the last reader lets go. `clearSpoolDir`
 * removes what a crash between open and unlink left behind.
 */
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { StorageError } from '../errors.ts'
import { BytePool } from '../util/byte-pool.ts'
import { writevAt } from '../util/writev-at.ts'

/**
 * The buffers spools are read into, 256 KiB each, for readers that hand them back (byte-pool.ts):
 * requests served from a spool, and the chunk store's ingest that tails it.
 */
export const spoolReads = new BytePool(256 * 1024, 16)

export class Spool {
  readonly #fd: number
  #size = 0
  #refs = 1
  #closed = false
  /** A write on the thread pool (appendInPool): the descriptor stays open until it is done. */
  #inPool: Promise<void> | undefined

  private constructor (fd: number) {
    this.#fd = fd
  }

  /** A new empty spool in `dir`; throws StorageError when it cannot be created. */
  static async create (dir: string): Promise<Spool> {
    const path = join(dir, `${randomBytes(12).toString('hex')}.spool`)
    let fd: number | undefined
    try {
      fd = openSync(path, 'w+', 0o600)
      unlinkSync(path)
      return new Spool(fd)
    } catch (err) {
      if (fd !== undefined) closeSync(fd)
      throw new StorageError(`cannot create a spool file in ${dir}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Bytes written so far. */
  get size (): number { return this.#size }

  /**
   * Appends `chunk`; throws StorageError (disk full, I/O error). Reads and writes are synchronous:
   * they hit the page cache and cost microseconds, where a round trip through libuv's thread pool
   * waits behind every fsync of the chunk store.
   */
  async append (chunk: Uint8Array): Promise<void> {
    // A closed descriptor's number may already belong to another file.
    if (this.#closed) throw new StorageError('spool write after close')
    let offset = 0
    try {
      while (offset < chunk.length) offset += writeSync(this.#fd, chunk, offset, chunk.length - offset, this.#size + offset)
    } catch (err) {
      throw new StorageError(`spool write failed: ${(err as Error).message}`, { cause: err })
    }
    this.#size += chunk.length
  }

  /**
   * Appends `pieces` with one write on libuv's thread pool, for a writer that must not spend the
   * event loop on it (a fill from peers copies the whole NAR while the event loop checks chunks).
   * One call at a time: the caller awaits each before the next. Throws StorageError.
   */
  async appendInPool (pieces: readonly Uint8Array[]): Promise<void> {
    if (this.#closed) throw new StorageError('spool write after close')
    if (this.#inPool !== undefined) throw new Error('spool: one appendInPool at a time')
    const write = writevAt(this.#fd, pieces, this.#size)
    this.#inPool = write.then(() => {}, () => {})
    try {
      this.#size += await write
    } catch (err) {
      throw new StorageError(`spool write failed: ${(err as Error).message}`, { cause: err })
    } finally {
      this.#inPool = undefined
    }
  }

  /**
   * Up to `length` bytes at `position` (never past what was appended). With `pool`, read into one
   * of its buffers (at most its size), lent to the caller: see byte-pool.ts.
   */
  async read (position: number, length: number, pool?: BytePool): Promise<Uint8Array> {
    const want = Math.min(length, this.#size - position, pool?.size ?? Infinity)
    if (want <= 0) return new Uint8Array(0)
    if (this.#closed) throw new StorageError('spool read after close')
    const buffer = pool?.take() ?? Buffer.allocUnsafe(want)
    let got = 0
    try {
      while (got < want) {
        const n = readSync(this.#fd, buffer, got, want - got, position + got)
        if (n === 0) throw new Error(`spool ended at ${position + got}, expected ${position + want}`)
        got += n
      }
    } catch (err) {
      pool?.put(buffer)
      throw new StorageError(`spool read failed: ${(err as Error).message}`, { cause: err })
    }
    return pool === undefined ? buffer : pool.lend(buffer.subarray(0, want), buffer)
  }

  /** One more holder; each `retain` is matched by one `release`. */
  retain (): void { this.#refs++ }

  /** Drops one hold; the file closes (and its space is freed) with the last. */
  async release (): Promise<void> {
    if (--this.#refs > 0 || this.#closed) return
    this.#closed = true
    // Closed under a write in the pool, the descriptor's number could be reused by another file
    // before the write lands.
    await this.#inPool
    try { closeSync(this.#fd) } catch {}
  }
}

/** Creates the spool directory, emptied of anything an earlier process left. */
export async function clearSpoolDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true, mode: 0o700 })
}
