/**
 * Blocks of a repository written one file per block (blockstore-fs's layout: a directory named by
 * the last two characters of the CID's base32 multihash), which narswarm wrote before its block
 * store became pack files (pack-store.ts). Read so that such a repository keeps serving what it
 * has; nothing new is written here. A block is one `readFile` (blockstore-fs reads through a
 * 64 KiB read stream).
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import type { CID } from 'multiformats/cid'

export class BlockFiles extends FsBlockstore {
  readonly #sharding = new NextToLast()

  constructor (root: string) {
    super(root, { shardingStrategy: new NextToLast(), createIfMissing: false })
  }

  /** The block, or undefined when it is not here (one system call either way). */
  async read (cid: CID): Promise<Uint8Array | undefined> {
    const { dir, file } = this.#sharding.encode(cid)
    try {
      return await readFile(join(this.path, dir, file))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }
}
