/**
 * Chunk file writes on libuv's thread pool (chunk-file.ts has the layout). A chunk is encoded
 * here and its file's contents copied into one of SLOTS buffers allocated once, so the caller's
 * buffer is free when `write` returns and no memory is allocated per chunk for the write: on some
 * virtual machines touching fresh pages costs more than writing the file. Every system call
 * (create, write, fsync, close, rename) waits in the thread pool, never on the event loop:
 * creating a file blocks while the file system commits other files' fsyncs, which stalled every
 * request when it was done here. When every slot is taken, `write` waits for one (back-pressure).
 */
import { hash, randomBytes } from 'node:crypto'
import { close, fdatasync, mkdir, open, rename, rm, write } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { chunkPath, encodeChunk, ZSTD, type ChunkDirs } from './chunk-file.ts'

const SLOT_SIZE = (256 << 10) + 64
const SLOTS = 8

const openAsync = promisify(open)
const fdatasyncAsync = promisify(fdatasync)
const closeAsync = promisify(close)
const renameAsync = promisify(rename)
const mkdirAsync = promisify(mkdir)

async function writeAll (fd: number, bytes: Uint8Array): Promise<number> {
  return await new Promise<number>((resolve, reject) => write(fd, bytes, (err, n) => err === null ? resolve(n) : reject(err)))
}

/** What a written chunk takes on disk, and the hash its file's body is checked against when it is compressed. */
export interface StoredChunk {
  storedSize: number
  storedHash: Uint8Array | undefined
}

export class ChunkWriter {
  readonly #dirs: ChunkDirs
  readonly #free: Uint8Array[] = []
  readonly #made = new Set<string>()
  readonly #inFlight = new Set<Promise<StoredChunk>>()
  readonly #waiting: Array<() => void> = []
  #slots = 0
  #closed = false
  /** Temporary names: unique to this writer (two processes may share a store), then counted. */
  readonly #tmpPrefix = `${process.pid}-${randomBytes(6).toString('hex')}-`
  #tmpCount = 0

  constructor (dirs: ChunkDirs) {
    this.#dirs = dirs
  }

  /** Writes a chunk file; `compressed` (a checked zstd frame of `bytes`) is its body if given. */
  async write (hex: string, bytes: Uint8Array, compressed?: Uint8Array): Promise<StoredChunk> {
    if (this.#closed) throw new Error('the chunk store is closed')
    const done = this.#write(hex, compressed === undefined ? encodeChunk(bytes) : { flag: ZSTD, body: compressed })
    this.#inFlight.add(done)
    try {
      return await done
    } finally {
      this.#inFlight.delete(done)
    }
  }

  async #write (hex: string, encoded: { flag: number, body: Uint8Array }): Promise<StoredChunk> {
    let { flag, body } = encoded
    const length = 1 + body.length
    // A compressed body is sent to Nix as it is stored (a zstd frame): this hash checks it on
    // reading without decompressing it. A raw body is checked against the chunk id itself.
    const storedHash = flag === ZSTD ? new Uint8Array(hash('sha256', body, 'buffer')) : undefined
    let slot = this.#take(length)
    // The caller may reuse its buffer as soon as `write` returns: kept while waiting for a slot.
    if (slot === undefined) body = new Uint8Array(body)
    while (slot === undefined) {
      await new Promise<void>(resolve => this.#waiting.push(resolve))
      slot = this.#take(length)
    }
    const file = slot.subarray(0, length)
    file[0] = flag
    file.set(body, 1)
    try {
      await this.#writeFile(hex, file)
    } finally {
      if (slot.length === SLOT_SIZE) { this.#free.push(slot); this.#waiting.shift()?.() }
    }
    return { storedSize: length, storedHash }
  }

  /** A buffer for `length` bytes: a free slot, a new one while there are fewer than SLOTS. */
  #take (length: number): Uint8Array | undefined {
    if (length > SLOT_SIZE) return new Uint8Array(length)
    const slot = this.#free.pop()
    if (slot !== undefined) return slot
    if (this.#slots >= SLOTS) return undefined
    this.#slots++
    return new Uint8Array(SLOT_SIZE)
  }

  async #writeFile (hex: string, file: Uint8Array): Promise<void> {
    const tmp = join(this.#dirs.tmp, `${this.#tmpPrefix}${this.#tmpCount++}.tmp`)
    let fd: number | undefined
    try {
      fd = await openAsync(tmp, 'wx')
      for (let done = 0; done < file.length;) done += await writeAll(fd, file.subarray(done))
      if (this.#dirs.fsync) await fdatasyncAsync(fd)
      await closeAsync(fd)
      fd = undefined
      const dir = join(this.#dirs.root, hex.slice(0, 2))
      if (!this.#made.has(dir)) {
        await mkdirAsync(dir, { recursive: true })
        this.#made.add(dir)
      }
      try {
        await renameAsync(tmp, chunkPath(this.#dirs.root, hex))
      } catch (err) {
        // The fan-out directory went away since (the store was emptied): made again, once.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        await mkdirAsync(dir, { recursive: true })
        await renameAsync(tmp, chunkPath(this.#dirs.root, hex))
      }
    } catch (err) {
      if (fd !== undefined) await closeAsync(fd).catch(() => {})
      await new Promise<void>(resolve => rm(tmp, { force: true }, () => resolve()))
      throw err
    }
  }

  /** Waits for the writes already asked for; later writes are refused. */
  async close (): Promise<void> {
    this.#closed = true
    await Promise.allSettled(this.#inFlight)
  }
}
