/**
 * The embedded node's pack block store on a real directory: blocks written and read back across a
 * reopen, several packs, one write for a block put twice at once, a block damaged on disk treated
 * as absent (and not served), appending after a crash that left unindexed bytes, and blocks of a
 * repository written one file per block by blockstore-fs still read.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, stat, truncate, appendFile, open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { PackStore } from '../../src/backend/ipfs/pack-store.ts'
import { collect } from '../helpers/bytes.ts'

async function block (size: number): Promise<{ cid: CID, bytes: Uint8Array }> {
  const bytes = randomBytes(size)
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

async function withDir (run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-pack-'))
  try { await run(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

async function opened (dir: string, packBytes?: number): Promise<PackStore> {
  const store = new PackStore(dir, packBytes === undefined ? {} : { packBytes })
  await store.open()
  return store
}

describe('ipfs pack store', () => {
  it('keeps blocks across a reopen, spread over several packs', async () => withDir(async dir => {
    const blocks = await Promise.all(Array.from({ length: 12 }, async (_, i) => await block(1000 + i * 300)))
    let store = await opened(dir, 4096)
    await Promise.all(blocks.map(async b => await store.put(b.cid, b.bytes)))
    assert.equal(await store.read(blocks[0]!.cid).then(b => b?.length), blocks[0]!.bytes.length)
    await store.close()
    const packs = (await readdir(join(dir, 'packs'))).sort()
    assert.ok(packs.length >= 3, `expected several packs, got ${packs.join(', ')}`)
    store = await opened(dir, 4096)
    for (const b of blocks) {
      assert.ok(await store.has(b.cid))
      assert.deepEqual(Buffer.from((await collect(store.get(b.cid)))), Buffer.from(b.bytes))
    }
    const all = []
    for await (const pair of store.getAll()) all.push(pair.cid.multihash.bytes.toString())
    assert.deepEqual(all.sort(), blocks.map(b => b.cid.multihash.bytes.toString()).sort())
    await store.close()
  }))

  it('writes a block given as pieces (as it came off the network) as one block', async () => withDir(async dir => {
    const store = await opened(dir)
    const b = await block(300_000)
    const pieces = [b.bytes.subarray(0, 7), b.bytes.subarray(7, 65_543), b.bytes.subarray(65_543)]
    await store.put(b.cid, pieces)
    assert.deepEqual(Buffer.from((await store.read(b.cid))!), Buffer.from(b.bytes))
    await store.close()
  }))

  it('answers absence from the index, and get throws NotFoundError', async () => withDir(async dir => {
    const store = await opened(dir)
    const missing = await block(100)
    assert.equal(await store.read(missing.cid), undefined)
    assert.equal(await store.has(missing.cid), false)
    await assert.rejects(collect(store.get(missing.cid)), { name: 'NotFoundError' })
    await store.close()
  }))

  it('writes a block put twice at once, or put again later, only once', async () => withDir(async dir => {
    const store = await opened(dir)
    const b = await block(50_000)
    await Promise.all([store.put(b.cid, b.bytes), store.put(b.cid, b.bytes), store.put(b.cid, [b.bytes.subarray(0, 10), b.bytes.subarray(10)])])
    await store.put(b.cid, b.bytes)
    await store.close()
    assert.equal((await stat(join(dir, 'packs', '000001.pack'))).size, b.bytes.length)
  }))

  it('treats a block damaged on disk as absent, and stores it again', async () => withDir(async dir => {
    let store = await opened(dir)
    const a = await block(4000)
    const b = await block(4000)
    await store.put(a.cid, a.bytes)
    await store.put(b.cid, b.bytes)
    await store.close()
    // A write lost in a crash: the index has the row, the pack has other bytes.
    const pack = await open(join(dir, 'packs', '000001.pack'), 'r+')
    await pack.write(Buffer.alloc(100), 0, 100, 4000 + 10)
    await pack.close()
    store = await opened(dir)
    assert.equal(await store.read(b.cid), undefined)
    assert.equal(await store.has(b.cid), false, 'a damaged block leaves the index')
    assert.deepEqual(Buffer.from((await store.read(a.cid))!), Buffer.from(a.bytes))
    await store.put(b.cid, b.bytes)
    assert.deepEqual(Buffer.from((await store.read(b.cid))!), Buffer.from(b.bytes))
    await store.close()
    // Damaged again, and put again without a read first: the put sees the damage and writes it.
    const size = (await stat(join(dir, 'packs', '000001.pack'))).size
    const again = await open(join(dir, 'packs', '000001.pack'), 'r+')
    await again.write(Buffer.alloc(100), 0, 100, size - 200)
    await again.close()
    store = await opened(dir)
    await store.put(b.cid, b.bytes)
    assert.deepEqual(Buffer.from((await store.read(b.cid))!), Buffer.from(b.bytes))
    await store.close()
  }))

  it('appends after bytes a crash left without an index row, and reads a pack cut short as absent', async () => withDir(async dir => {
    let store = await opened(dir)
    const a = await block(3000)
    await store.put(a.cid, a.bytes)
    await store.close()
    await appendFile(join(dir, 'packs', '000001.pack'), randomBytes(777))
    store = await opened(dir)
    const b = await block(2000)
    await store.put(b.cid, b.bytes)
    assert.deepEqual(Buffer.from((await store.read(a.cid))!), Buffer.from(a.bytes))
    assert.deepEqual(Buffer.from((await store.read(b.cid))!), Buffer.from(b.bytes))
    await store.close()
    await truncate(join(dir, 'packs', '000001.pack'), 3000 + 777 + 1000)
    store = await opened(dir)
    assert.equal(await store.has(b.cid), false, 'a row past the end of its pack is dropped at start-up')
    assert.equal(await store.read(b.cid), undefined)
    assert.ok(await store.has(a.cid))
    await store.close()
  }))

  it('reads blocks of a repository written one file per block', async () => withDir(async dir => {
    const old = new FsBlockstore(join(dir, 'blocks'), { shardingStrategy: new NextToLast() })
    await old.open()
    const b = await block(5000)
    await old.put(b.cid, b.bytes)
    await old.close()
    const store = await opened(dir)
    assert.ok(await store.has(b.cid))
    assert.deepEqual(Buffer.from((await store.read(b.cid))!), Buffer.from(b.bytes))
    assert.deepEqual(Buffer.from(await collect(store.get(b.cid))), Buffer.from(b.bytes))
    await store.close()
  }))
})
