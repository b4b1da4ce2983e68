import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { IntegrityError } from '../../src/errors.ts'
import { chunkIdOf, hexOf } from '../../src/chunk/files.ts'
import { decodeManifest, encodeManifest } from '../../src/chunk/manifest.ts'
import { ROWS_AT_ONCE } from '../../src/chunk/index-db.ts'
import type { CommittedNar } from '../../src/chunk/types.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { pseudoRandom, repeatingStream } from '../helpers/pseudo-random.ts'
import { corruptRecord, identity, identityOf, openStore, tempFiles } from './helpers.ts'

test('round trip: empty, one byte, exactly min, exactly max, several chunks', async () => {
  const store = await openStore()
  for (const size of [0, 1, 16384, 262144, 3_000_000]) {
    const nar = pseudoRandom(`rt${size}`, size)
    assert.equal(store.narSize(identity(nar).narHash), undefined)
    const m = await store.ingest(identity(nar), chunks(nar, 100_000))
    assert.equal(m.narSize, size)
    assert.equal(store.narSize(identity(nar).narHash), size)
    assert.equal(m.cdcId, store.cdcId)
    assert.equal(m.chunks.reduce((a, c) => a + c.size, 0), size)
    assert.deepEqual(decodeManifest(encodeManifest(m)), m)
    assert.ok((await collect(store.render(identity(nar).narHash)!)).equals(nar), `size ${size}`)
  }
  await store.close()
})

test('a 1 GiB NAR streamed in and rendered out, never held in memory', async () => {
  const store = await openStore()
  const size = 1 << 30
  // A repeating block: every byte is chunked, hashed and rendered, but few chunks are distinct.
  const expected = await identityOf(repeatingStream('big', size))
  const m = await store.ingest(expected, repeatingStream('big', size))
  assert.ok(m.chunks.length > 4096)
  const h = createHash('sha256')
  let n = 0
  for await (const c of store.render(expected.narHash)!) { h.update(c); n += c.length }
  assert.equal(n, size)
  assert.ok(h.digest().equals(expected.narHash.digest))
  assert.ok(process.memoryUsage().rss < 600 * 1024 * 1024, `rss ${process.memoryUsage().rss}`)
  await store.close()
})

test('a NAR that does not match its NarHash or NarSize is not committed, and its chunks are gone', async () => {
  const store = await openStore()
  const nar = pseudoRandom('bad', 1_000_000)
  const other = identity(pseudoRandom('other', 1_000_000))
  await assert.rejects(store.ingest({ narHash: other.narHash, narSize: nar.length }, chunks(nar)), IntegrityError)
  await assert.rejects(store.ingest({ ...identity(nar), narSize: nar.length - 1 }, chunks(nar)), IntegrityError)
  await assert.rejects(store.ingest({ ...identity(nar), narSize: nar.length + 1 }, chunks(nar)), IntegrityError)
  assert.equal(store.manifest(other.narHash), undefined)
  assert.equal(store.narSize(other.narHash), undefined)
  assert.equal(store.render(identity(nar).narHash), undefined)
  assert.equal(store.stats().chunks, 0)
  assert.deepEqual(tempFiles(store), [])
  await store.close()
})

test('an ingest whose body checks its own NarHash: committed when the body ends, nothing when it fails at its end', async () => {
  const store = await openStore()
  const nar = pseudoRandom('checked', 1_000_000)
  // As behind verifyNar: every byte goes by, then the body fails instead of ending.
  async function * failing (): AsyncGenerator<Uint8Array> {
    yield * chunks(nar)
    throw new IntegrityError('NAR hashes to something else')
  }
  await assert.rejects(store.ingest(identity(nar), failing(), { narHashChecked: true }), /hashes to something else/)
  assert.equal(store.manifest(identity(nar).narHash), undefined)
  assert.equal(store.stats().chunks, 0)
  // The size is still the store's to check.
  await assert.rejects(store.ingest({ ...identity(nar), narSize: nar.length + 1 }, chunks(nar), { narHashChecked: true }), IntegrityError)
  const manifest = await store.ingest(identity(nar), chunks(nar), { narHashChecked: true })
  assert.equal(manifest.narSize, nar.length)
  assert.ok((await collect(store.render(identity(nar).narHash)!)).equals(nar))
  await store.close()
})

test('an ingest that fails before reading its body closes the body', async () => {
  const store = await openStore()
  store.maintenance.makeRoom = async () => { throw new Error('no room') }
  let closed = false
  async function * body (): AsyncGenerator<Uint8Array> {
    try { yield new Uint8Array(1) } finally { closed = true }
  }
  const it = body()
  await it.next()
  await assert.rejects(store.ingest(identity(new Uint8Array(1)), it), /no room/)
  assert.ok(closed)
  await store.close()
})

test('concurrent ingests of one NAR: both succeed, one commit, one set of references', async () => {
  const store = await openStore()
  const nar = pseudoRandom('same', 2_000_000)
  const commits: CommittedNar[] = []
  store.onCommit(n => commits.push(n))
  const [a, b] = await Promise.all([store.ingest(identity(nar), chunks(nar, 70_000)), store.ingest(identity(nar), chunks(nar, 33_333))])
  assert.deepEqual(a, b)
  assert.equal(commits.length, 1)
  const again = await store.ingest(identity(nar), chunks(nar))
  assert.deepEqual(again, a)
  assert.equal(store.stats().nars, 1)
  for (const c of a.chunks) assert.equal(store.index.chunk(c.id)!.refcount, 1)
  await store.close()
})

test('putChunk calls onWritten before it resolves, at once for a chunk held already, never for a wrong one', async () => {
  const store = await openStore()
  const bytes = pseudoRandom('on-written', 100_000)
  const id = chunkIdOf(bytes)
  const events: string[] = []
  await store.putChunk(id, bytes, { onWritten: () => events.push('written') }).then(() => events.push('resolved'))
  assert.deepEqual(events, ['written', 'resolved'])
  let again = 0
  const stored = store.putChunk(id, bytes, { onWritten: () => again++ })
  assert.equal(again, 1, 'called before putChunk returned: nothing to write')
  await stored
  let wrong = 0
  await assert.rejects(store.putChunk(id, new Uint8Array(10), { onWritten: () => wrong++ }), IntegrityError)
  assert.equal(wrong, 0)
  await store.close()
})

test('has, readChunk, putChunk and commitManifest: filling a second store chunk by chunk', async () => {
  const a = await openStore()
  const b = await openStore()
  const nar = pseudoRandom('peer', 1_500_000)
  const m = await a.ingest(identity(nar, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x'), chunks(nar))
  assert.deepEqual(a.has(m.chunks.map(c => c.id)), m.chunks.map(() => true))
  assert.deepEqual(b.has(m.chunks.map(c => c.id)), m.chunks.map(() => false))
  const wire = decodeManifest(encodeManifest(a.manifest(m.narHash)!))
  await assert.rejects(b.commitManifest(wire, identity(nar)), IntegrityError, 'chunks missing')
  await assert.rejects(b.putChunk(wire.chunks[0]!.id, new Uint8Array(10)), IntegrityError)
  for (const c of wire.chunks) await b.putChunk(c.id, (await a.readChunk(c.id))!)
  assert.equal(b.manifest(m.narHash), undefined)
  const seen: CommittedNar[] = []
  b.onCommit(n => seen.push(n))
  await assert.rejects(b.commitManifest(wire, { narHash: identity(nar.subarray(1)).narHash, narSize: nar.length }), IntegrityError)
  // A stored chunk gone bad fails the whole NAR's hash: it is found, dropped, and can be put again.
  const bad = wire.chunks[1]!
  corruptRecord(b, bad.id)
  await assert.rejects(b.commitManifest(wire, identity(nar)), /chunk [0-9a-f]{64}: .*do not hash/)
  assert.deepEqual(b.has([bad.id]), [false])
  await b.putChunk(bad.id, (await a.readChunk(bad.id))!)
  await b.commitManifest(wire, identity(nar, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x'))
  assert.equal(seen.length, 1)
  assert.equal(seen[0]!.storePath, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x')
  assert.ok((await collect(b.render(m.narHash)!)).equals(nar))
  assert.equal(await b.readChunk(chunkIdOf(new Uint8Array(5))), undefined)
  await a.close()
  await b.close()
})

test('a store made by another chunker is refused with both ids named', async () => {
  const first = await openStore({ params: { min: 4096, avg: 16384, max: 65536 } })
  const dir = join(first.files.root, '..')
  await first.close()
  await assert.rejects(openStore({ dir, db: first.index.db }), (err: Error) => {
    assert.equal(err.name, 'ConfigError')
    assert.match(err.message, /fcdc32-v1\/4096\/16384\/65536/)
    assert.match(err.message, /fcdc32-v1\/16384\/65536\/262144/)
    assert.match(err.message, /narswarm cache clear/)
    return true
  })
})

test('chunks: the rows of a batch in one statement, none for ids without one, at most ROWS_AT_ONCE; a NAR of several batches renders whole', async () => {
  const store = await openStore()
  const ids = Array.from({ length: ROWS_AT_ONCE + 3 }, (_, i) => chunkIdOf(Buffer.from(`chunk ${i}`)))
  store.index.transaction(() => { for (const [i, id] of ids.entries()) store.index.addChunk(id, i + 1, i + 2, 0, undefined, 7, i * 100) })
  const unknown = chunkIdOf(Buffer.from('no row'))
  const rows = store.index.chunks([ids[2]!, unknown, ids[0]!, ids[2]!])
  assert.deepEqual(rows.map(r => hexOf(r.id)).sort(), [hexOf(ids[0]!), hexOf(ids[2]!)].sort(), 'one row per id that has one, a repeated id once')
  const row2 = rows.find(r => hexOf(r.id) === hexOf(ids[2]!))!
  assert.deepEqual({ ...row2, id: undefined }, { ...store.index.chunk(ids[2]!), id: undefined }, 'the same row as a lookup of its own')
  assert.equal(store.index.chunks(ids.slice(0, ROWS_AT_ONCE)).length, ROWS_AT_ONCE)
  assert.deepEqual(store.index.chunks([]), [])
  assert.throws(() => store.index.chunks(ids), RangeError)
  // A NAR of many more chunks than one batch renders whole.
  const nar = pseudoRandom('batches', 12 * ROWS_AT_ONCE * 16384)
  const m = await store.ingest(identity(nar), chunks(nar, 100_000))
  assert.ok(m.chunks.length > 2 * ROWS_AT_ONCE, `${m.chunks.length} chunks`)
  assert.ok((await collect(store.render(identity(nar).narHash)!)).equals(nar))
  await store.close()
})

test('chunksIn: the rows of one first byte, 00 and ff included', async () => {
  const store = await openStore()
  const ids = ['00', '00ff', '7f', '80', 'fe', 'feff', 'ff', 'ff00', 'ffff'].map(p => Buffer.from(p.padEnd(64, p.length === 2 ? '0' : 'f'), 'hex'))
  store.index.transaction(() => { for (const id of ids) store.index.addChunk(id, 1, 2, 0) })
  const first = (prefix: number): string[] => store.index.chunksIn(prefix).map(r => hexOf(r.id)).sort()
  const expect = (prefix: number): string[] => ids.filter(id => id[0] === prefix).map(hexOf).sort()
  for (const prefix of [0x00, 0x7f, 0x80, 0xfe, 0xff]) assert.deepEqual(first(prefix), expect(prefix), `prefix ${prefix}`)
  assert.deepEqual(first(0x01), [])
  assert.equal([...Array(256).keys()].reduce((n, p) => n + store.index.chunksIn(p).length, 0), ids.length)
  await store.close()
})
