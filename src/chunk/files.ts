/**
 * Chunk files on disk: `chunks/<2 hex>/<64 hex>` under the state directory, one file per chunk,
 * a one-byte header (0 = raw, 1 = zstd) and the bytes. A chunk is stored zstd-3 compressed only
 * when that saves at least an eighth; most NAR chunks of binaries do, compressed archives do not.
 *
 * A write goes to `chunks/tmp/<pid>-<random>.tmp`, is fsynced, then renamed into place, so a
 * chunk file either is whole or does not exist under its name; the index row comes after (the
 * store's business). A read hashes the bytes again and reports a chunk whose bytes do not match
 * its name as corrupt; it never returns them.
 */
import { hash, randomBytes } from 'node:crypto'
import { closeSync, fdatasync, mkdirSync, openSync, readSync, renameSync, rmSync, writevSync } from 'node:fs'
import { mkdir, readdir, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib'
import { StorageError } from '../errors.ts'
import { isAlive } from '../util/process.ts'

// A window no larger than the largest chunk: zstd then allocates a fraction of what its default
// (2 MiB for level 3) costs per call, and the process's memory stays flat over millions of chunks.
const ZSTD_OPTIONS = { params: { [constants.ZSTD_c_compressionLevel]: 3, [constants.ZSTD_c_windowLog]: 18 } }
const SAMPLE = 4096
const SAMPLE_OPTIONS = { params: { [constants.ZSTD_c_compressionLevel]: 1, [constants.ZSTD_c_windowLog]: 12 } }

const RAW = 0
const ZSTD = 1
const HEX64 = /^[0-9a-f]{64}$/

/**
 * Whether compressing a chunk may pay: a 4 KiB sample from its middle is compressed at level 1
 * first, so chunks of compressed archives (most of a .jar, .gz, .png) cost a few microseconds, not
 * a full compression. A sample whose bytes are spread almost evenly over all 256 values (entropy
 * above 7.9 bits a byte; random bytes measure 7.95 in 4 KiB, machine code 6, text 5) is not even
 * tried: counting them costs a quarter of the sample compression, which creates a zstd context.
 * Compression runs on the calling thread: Node's one-shot asynchronous zstd was several times
 * slower per chunk than the synchronous call.
 */
function worthCompressing (bytes: Uint8Array): boolean {
  if (bytes.length < 64) return false
  if (bytes.length <= SAMPLE * 2) return true
  const start = (bytes.length - SAMPLE) >>> 1
  const sample = bytes.subarray(start, start + SAMPLE)
  if (entropy(sample) > 7.9) return false
  const packed = zstdCompressSync(sample, SAMPLE_OPTIONS)
  return packed.length < SAMPLE - (SAMPLE >>> 3)
}

const counts = new Uint32Array(256)

/** Shannon entropy of the bytes' distribution, in bits per byte. */
function entropy (bytes: Uint8Array): number {
  counts.fill(0)
  for (let i = 0; i < bytes.length; i++) counts[bytes[i]!]!++
  let h = 0
  for (let i = 0; i < 256; i++) {
    const c = counts[i]!
    if (c > 0) { const p = c / bytes.length; h -= p * Math.log2(p) }
  }
  return h
}

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
  readonly #dirs = new Set<string>()
  #scratch = Buffer.allocUnsafe(0)

  readonly #fsync: boolean

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
    return join(this.root, hex.slice(0, 2), hex)
  }

  /** Writes a chunk whose id was already computed; returns the bytes it takes on disk. */
  async write (hex: string, bytes: Uint8Array): Promise<number> {
    let body = bytes
    let flag = RAW
    if (worthCompressing(bytes)) {
      const packed = zstdCompressSync(bytes, { ...ZSTD_OPTIONS, chunkSize: Math.max(bytes.length, 64) })
      if (packed.length <= bytes.length - (bytes.length >>> 3)) { body = packed; flag = ZSTD }
    }
    const tmp = join(this.tmp, `${process.pid}-${randomBytes(8).toString('hex')}.tmp`)
    // Writing to the page cache, closing and renaming are quick and done here; only the fsync
    // waits for the disk, in the thread pool: on a loaded machine each thread-pool round trip
    // costs far more than the system call it runs.
    let fd: number | undefined
    try {
      fd = openSync(tmp, 'wx')
      writevSync(fd, [Uint8Array.of(flag), body])
      if (this.#fsync) await new Promise<void>((resolve, reject) => fdatasync(fd!, err => err === null ? resolve() : reject(err)))
      closeSync(fd)
      fd = undefined
      const dir = hex.slice(0, 2)
      if (!this.#dirs.has(dir)) {
        mkdirSync(join(this.root, dir), { recursive: true })
        this.#dirs.add(dir)
      }
      renameSync(tmp, this.path(hex))
    } catch (err) {
      if (fd !== undefined) try { closeSync(fd) } catch {}
      rmSync(tmp, { force: true })
      throw storageError(`cannot store chunk ${hex}`, err)
    }
    return 1 + body.length
  }

  /**
   * The chunk's bytes (`size` of them), hashed again; undefined when there is no such file.
   * Throws CorruptChunk when the file does not hold them, StorageError when it cannot be read.
   * `verify: false` skips the hash, for a caller that checks a whole NAR made of these bytes.
   * Synchronous: from the page cache a chunk reads in tens of microseconds, while a thread-pool
   * round trip per open, read and close measured ten times that under load.
   */
  read (hex: string, size: number, verify = true): Uint8Array | undefined {
    // Raw takes 1 + size bytes, compressed at most 1 + 7/8 of that: one read is enough. The file
    // is read into one reused buffer, so a chunk costs one allocation: the bytes handed out.
    if (this.#scratch.length < size + 2) this.#scratch = Buffer.allocUnsafe(size + 2)
    const buf = this.#scratch
    let n: number
    try {
      const fd = openSync(this.path(hex), 'r')
      try {
        n = readSync(fd, buf, 0, buf.length, 0)
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw storageError(`cannot read chunk ${hex}`, err)
    }
    let bytes: Uint8Array
    if (buf[0] === RAW && n === size + 1) bytes = Uint8Array.prototype.slice.call(buf, 1, n)
    else if (buf[0] === ZSTD && n > 1 && n <= size + 1) {
      try {
        // One output buffer of the chunk's size, not zlib's 16 KiB pieces joined afterwards.
        bytes = zstdDecompressSync(buf.subarray(1, n), { maxOutputLength: Math.max(size, 64), chunkSize: Math.max(size, 64) })
      } catch (err) {
        throw new CorruptChunk(hex, `zstd: ${(err as Error).message}`)
      }
    } else throw new CorruptChunk(hex, `${n} bytes with header ${buf[0]} for a chunk of ${size} bytes`)
    if (bytes.length !== size) throw new CorruptChunk(hex, `${bytes.length} bytes, expected ${size}`)
    if (verify && hash('sha256', bytes, 'hex') !== hex) throw new CorruptChunk(hex, 'its bytes do not hash to its name')
    return bytes
  }

  async remove (hex: string): Promise<void> {
    await unlink(this.path(hex)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw storageError(`cannot remove chunk ${hex}`, err)
    })
  }

  /** Every chunk file name on disk; other files under a fan-out directory go to `strays`. */
  async list (): Promise<{ chunks: Set<string>, strays: string[] }> {
    const chunks = new Set<string>()
    const strays: string[] = []
    for (const dir of await readdir(this.root)) {
      if (dir === 'tmp') continue
      if (!/^[0-9a-f]{2}$/.test(dir)) { strays.push(join(this.root, dir)); continue }
      for (const name of await readdir(join(this.root, dir))) {
        if (HEX64.test(name) && name.startsWith(dir)) chunks.add(name)
        else strays.push(join(this.root, dir, name))
      }
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
