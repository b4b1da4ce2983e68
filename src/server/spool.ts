/**
 * A spool: the bytes of one NAR fetch, written once by the fetch and read at any offset by every
 * request that shares it, so followers tail the fetch instead of starting their own and memory
 * stays bounded whatever the NAR's size. The file is unlinked as soon as it is open: nothing
 * outlives the process, and its space returns when the last reader lets go. `clearSpoolDir`
 * removes what a crash between open and unlink left behind.
 */
import { mkdir, open, rm, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { StorageError } from '../errors.ts'

export class Spool {
  readonly #file: FileHandle
  #size = 0
  #refs = 1
  #closed: Promise<void> | undefined

  private constructor (file: FileHandle) {
    this.#file = file
  }

  /** A new empty spool in `dir`; throws StorageError when it cannot be created. */
  static async create (dir: string): Promise<Spool> {
    const path = join(dir, `${randomBytes(12).toString('hex')}.spool`)
    try {
      const file = await open(path, 'w+', 0o600)
      await unlink(path).catch(async (err: unknown) => { await file.close(); throw err })
      return new Spool(file)
    } catch (err) {
      throw new StorageError(`cannot create a spool file in ${dir}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Bytes written so far. */
  get size (): number { return this.#size }

  /** Appends `chunk`; throws StorageError (disk full, I/O error). */
  async append (chunk: Uint8Array): Promise<void> {
    let offset = 0
    try {
      while (offset < chunk.length) {
        const { bytesWritten } = await this.#file.write(chunk, offset, chunk.length - offset, this.#size + offset)
        offset += bytesWritten
      }
    } catch (err) {
      throw new StorageError(`spool write failed: ${(err as Error).message}`, { cause: err })
    }
    this.#size += chunk.length
  }

  /** Up to `length` bytes at `position` (never past what was appended). */
  async read (position: number, length: number): Promise<Uint8Array> {
    const want = Math.min(length, this.#size - position)
    if (want <= 0) return new Uint8Array(0)
    const buffer = Buffer.allocUnsafe(want)
    let got = 0
    while (got < want) {
      const { bytesRead } = await this.#file.read(buffer, got, want - got, position + got)
      if (bytesRead === 0) throw new StorageError(`spool ended at ${position + got}, expected ${position + want}`)
      got += bytesRead
    }
    return buffer
  }

  /** One more holder; each `retain` is matched by one `release`. */
  retain (): void { this.#refs++ }

  /** Drops one hold; the file closes (and its space is freed) with the last. */
  async release (): Promise<void> {
    if (--this.#refs > 0) return
    this.#closed ??= this.#file.close().catch(() => {})
    await this.#closed
  }
}

/** Creates the spool directory, emptied of anything an earlier process left. */
export async function clearSpoolDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true, mode: 0o700 })
}
