/**
 * The NarHash of a NAR filled from peers, computed as chunks arrive: right whatever the order of
 * arrival, with held chunks read from the store in turn and repeated chunks counted at each
 * position; it gives up (and the store hashes at commit) when too much waits out of order or a
 * held chunk is gone.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { InOrderHash } from '../../src/peer/in-order-hash.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

test('chunks in any order, some held, one repeated: the digest of the whole NAR, and the NAR copied in order', async () => {
  const store = new MemoryStore(1000)
  const block = randomBytes(1000)
  // Chunk 3 repeats chunk 1.
  const nar = Buffer.concat([randomBytes(1000), block, randomBytes(1000), block, randomBytes(1000), randomBytes(500)])
  const { manifest, parts } = store.split(nar)
  // The store already holds chunks 0 and 4.
  for (const i of [0, 4]) await store.putChunk(manifest.chunks[i]!.id, parts[i]!)
  const held = store.has(manifest.chunks.map(c => c.id))
  const copied: Uint8Array[] = []
  const order = new InOrderHash(manifest, held, store, 'sha256', { append: async pieces => { copied.push(...pieces) } })
  for (const i of [5, 2, 1]) order.add(manifest.chunks[i]!.id, parts[i]!)
  assert.ok((await order.digest())!.equals(sha256(nar)))
  assert.ok(Buffer.concat(copied).equals(nar))
})

test('a copy of several MiB: written in batches, one at a time, in order; after a failed write nothing more is written, and the digest is unaffected', async () => {
  const store = new MemoryStore(64 << 10)
  const nar = randomBytes(5 << 20)
  const { manifest, parts } = store.split(nar)
  for (const failAt of [undefined, 2]) {
    const copied: Uint8Array[] = []
    let calls = 0
    let writing = false
    const copy = {
      append: async (pieces: readonly Uint8Array[]) => {
        assert.equal(writing, false, 'two appends at once')
        calls++
        if (calls === failAt) throw new Error('disk full')
        writing = true
        await new Promise(resolve => setTimeout(resolve, 5))
        writing = false
        copied.push(...pieces)
      }
    }
    const order = new InOrderHash(manifest, manifest.chunks.map(() => false), store, 'sha256', copy)
    for (let i = manifest.chunks.length - 1; i >= 0; i--) order.add(manifest.chunks[i]!.id, parts[i]!)
    assert.ok((await order.digest())!.equals(sha256(nar)))
    assert.ok(calls > 1 && calls < manifest.chunks.length, `${calls} appends`)
    if (failAt === undefined) assert.ok(Buffer.concat(copied).equals(nar))
    else assert.equal(calls, failAt, 'appends after the failed one')
  }
})

test('a chunk never given: no digest', async () => {
  const store = new MemoryStore(1000)
  const nar = randomBytes(3000)
  const { manifest, parts } = store.split(nar)
  const order = new InOrderHash(manifest, [false, false, false], store, 'sha256')
  order.add(manifest.chunks[0]!.id, parts[0]!)
  order.add(manifest.chunks[2]!.id, parts[2]!)
  assert.equal(await order.digest(), undefined)
})

test('a held chunk gone from the store, or more than 32 MiB waiting out of order: it gives up', async () => {
  const store = new MemoryStore(1 << 20)
  const nar = randomBytes(40 << 20)
  const { manifest, parts } = store.split(nar)
  const none = manifest.chunks.map(() => false)
  const late = new InOrderHash(manifest, none, store, 'sha256')
  // Everything but the first chunk arrives first: 39 MiB would have to wait.
  for (let i = parts.length - 1; i >= 0; i--) late.add(manifest.chunks[i]!.id, parts[i]!)
  assert.equal(await late.digest(), undefined)

  const small = store.split(nar.subarray(0, 3 << 20))
  const gone = new InOrderHash(small.manifest, [true, false, false], store, 'sha256')
  gone.add(small.manifest.chunks[1]!.id, small.parts[1]!)
  gone.add(small.manifest.chunks[2]!.id, small.parts[2]!)
  assert.equal(await gone.digest(), undefined)
})

test('ahead: true once 16 MiB wait behind a gap, false when the gap is filled (and onAdvance says so)', async () => {
  const store = new MemoryStore(1 << 20)
  const nar = randomBytes(20 << 20)
  const { manifest, parts } = store.split(nar)
  const order = new InOrderHash(manifest, manifest.chunks.map(() => false), store, 'sha256')
  let advanced = 0
  order.onAdvance = () => { advanced++ }
  for (let i = 1; i <= 15; i++) order.add(manifest.chunks[i]!.id, parts[i]!)
  assert.equal(order.ahead, false)
  order.add(manifest.chunks[16]!.id, parts[16]!)
  assert.equal(order.ahead, true)
  assert.equal(advanced, 0)
  order.add(manifest.chunks[0]!.id, parts[0]!)
  for (let i = 17; i < parts.length; i++) order.add(manifest.chunks[i]!.id, parts[i]!)
  assert.ok((await order.digest())!.equals(sha256(nar)))
  assert.equal(order.ahead, false)
  assert.ok(advanced > 0)
})
