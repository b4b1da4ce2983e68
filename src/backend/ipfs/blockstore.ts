/**
 * The embedded node's block store: blockstore-fs's on-disk layout (one file per block, in a
 * directory named by the last two characters of the CID's base32 multihash), so repositories
 * written before stay readable, with faster reads and writes. blockstore-fs reads a block through
 * a 64 KiB read stream and runs a `mkdir` before every write; at a few hundred blocks a second
 * those system calls were most of a transfer's time. Here a block is one `readFile`, and a write
 * is a temporary file renamed into place (a crash leaves no torn block), with each shard directory
 * created once.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { NotFoundError, PutFailedError } from 'interface-store'
import type { CID } from 'multiformats/cid'

export class BlockFiles extends FsBlockstore {
  readonly #root: string
  readonly #sharding = new NextToLast()
  readonly #dirs = new Set<string>()

  constructor (root: string) {
    super(root, { shardingStrategy: new NextToLast() })
    this.#root = root
  }

  override async * get (cid: CID, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const { dir, file } = this.#sharding.encode(cid)
    try {
      yield await readFile(join(this.#root, dir, file), { signal: options.signal })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`block ${cid.toString()} is not here`)
      throw err
    }
  }

  /** The block, or undefined when it is not here (one system call either way). */
  async read (cid: CID): Promise<Uint8Array | undefined> {
    const { dir, file } = this.#sharding.encode(cid)
    try {
      return await readFile(join(this.#root, dir, file))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  override async put (cid: CID, bytes: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<CID> {
    const { dir, file } = this.#sharding.encode(cid)
    const path = join(this.#root, dir, file)
    const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`
    try {
      options.signal?.throwIfAborted()
      if (!this.#dirs.has(dir)) {
        await mkdir(join(this.#root, dir), { recursive: true })
        this.#dirs.add(dir)
      }
      await writeFile(temp, bytes)
      await rename(temp, path)
      return cid
    } catch (err) {
      await rm(temp, { force: true }).catch(() => {})
      throw new PutFailedError(`block ${cid.toString()}: ${(err as Error).message}`)
    }
  }
}
