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
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { constants, zstdCompressSync, zstdDecompress } from 'node:zlib'
import { promisify } from 'node:util'
import { StorageError } from '../errors.ts'

const decompress = promisify(zstdDecompress)
const ZSTD_OPTIONS = { params: { [constants.ZSTD_c_compressionLevel]: 3 } }
const SAMPLE = 4096

export const RAW = 0
export const ZSTD = 1
const HEX64 = /^[0-9a-f]{64}$/

/**
 * Whether compressing a chunk may pay: a 4 KiB sample from its middle is compressed at level 1
 * first, so chunks of compressed archives (most of a .jar, .gz, .png) cost a few microseconds, not
 * a full compression. Compression runs on the calling thread: Node's one-shot asynchronous zstd
 * was several times slower per chunk than the synchronous call.
 */
function worthCompressing (bytes: Uint8Array): boolean {
  if (bytes.length < 64) return false
  if (bytes.length <= SAMPLE * 2) return true
  const start = (bytes.length - SAMPLE) >>> 1
  const packed = zstdCompressSync(bytes.subarray(start, start + SAMPLE), { params: { [constants.ZSTD_c_compressionLevel]: 1 } })
  return packed.length < SAMPLE - (SAMPLE >>> 3)
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

  constructor (root: string) {
    this.root = root
    this.tmp = join(root, 'tmp')
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
      const packed = zstdCompressSync(bytes, ZSTD_OPTIONS)
      if (packed.length <= bytes.length - (bytes.length >>> 3)) { body = packed; flag = ZSTD }
    }
    const tmp = join(this.tmp, `${process.pid}-${randomBytes(8).toString('hex')}.tmp`)
    try {
      const fh = await open(tmp, 'wx')
      try {
        await fh.writev([Uint8Array.of(flag), body])
        await fh.sync()
      } finally {
        await fh.close()
      }
      const dir = hex.slice(0, 2)
      if (!this.#dirs.has(dir)) {
        await mkdir(join(this.root, dir), { recursive: true })
        this.#dirs.add(dir)
      }
      await rename(tmp, this.path(hex))
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {})
      throw storageError(`cannot store chunk ${hex}`, err)
    }
    return 1 + body.length
  }

  /**
   * The chunk's bytes (`size` of them), hashed again; undefined when there is no such file.
   * Throws CorruptChunk when the file does not hold them, StorageError when it cannot be read.
   */
  async read (hex: string, size: number): Promise<Uint8Array | undefined> {
    let buf: Buffer
    let n: number
    try {
      const fh = await open(this.path(hex), 'r')
      try {
        // Raw takes 1 + size bytes, compressed at most 1 + 7/8 of that: one read is enough.
        buf = Buffer.allocUnsafe(size + 2)
        n = (await fh.read(buf, 0, buf.length, 0)).bytesRead
      } finally {
        await fh.close()
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw storageError(`cannot read chunk ${hex}`, err)
    }
    let bytes: Uint8Array
    if (buf[0] === RAW && n === size + 1) bytes = buf.subarray(1, n)
    else if (buf[0] === ZSTD && n > 1 && n <= size + 1) {
      try {
        bytes = await decompress(buf.subarray(1, n), { maxOutputLength: Math.max(size, 1) })
      } catch (err) {
        throw new CorruptChunk(hex, `zstd: ${(err as Error).message}`)
      }
    } else throw new CorruptChunk(hex, `${n} bytes with header ${buf[0]} for a chunk of ${size} bytes`)
    if (bytes.length !== size) throw new CorruptChunk(hex, `${bytes.length} bytes, expected ${size}`)
    if (hash('sha256', bytes, 'hex') !== hex) throw new CorruptChunk(hex, 'its bytes do not hash to its name')
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
      if (pid !== process.pid && Number.isInteger(pid) && alive(pid)) continue
      if (pid === process.pid) continue
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

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export function storageError (message: string, err: unknown): Error {
  if (err instanceof StorageError) return err
  const code = (err as NodeJS.ErrnoException).code
  return new StorageError(`${message}: ${code ?? (err as Error).message}`, { cause: err })
}
