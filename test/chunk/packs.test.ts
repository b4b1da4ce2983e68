/**
 * Packs under eviction and sharing: the space of evicted NARs comes back (whole packs deleted,
 * the emptiest compacted), the bytes on disk are what the index counts, every NAR kept still
 * renders whole, and a second store on the same state directory (another process) neither
 * touches the packs the first is writing nor breaks its reads when it compacts the packs they use.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LocalChunkStore } from '../../src/chunk/store.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { tempDir } from '../helpers/temp.ts'
import { identity, openStore } from './helpers.ts'

const NAR = 300_000
const nar = (name: string): Buffer => pseudoRandom(name, NAR)

/** Bytes of the pack files on disk, and their ids. */
function packsOnDisk (store: LocalChunkStore): { bytes: number, ids: number[] } {
  const names = readdirSync(store.files.packs)
  return {
    bytes: names.reduce((n, f) => n + statSync(join(store.files.packs, f)).size, 0),
    ids: names.map(f => Number(f.replace('.pack', ''))).sort((a, b) => a - b)
  }
}

async function settle (store: LocalChunkStore): Promise<void> {
  await sleep(30)
  await store.maintenance.idle()
}

test('eviction gives pack space back: unused packs are deleted, the emptiest compacted, the cap kept, the NARs kept whole', async () => {
  // Packs of about two NARs each, room for five NARs.
  const store = await openStore({ capacity: 5 * NAR + 20_000, freshLease: 5, packBytes: 2 * NAR })
  // Every NAR shares its first chunks with a common prefix, so packs mix records in use with unused ones.
  const prefix = pseudoRandom('shared prefix', 100_000)
  const bytesOf = (name: string): Buffer => Buffer.concat([prefix, nar(name)])
  const names = Array.from({ length: 14 }, (_, i) => `n${i}`)
  for (const name of names) {
    await store.ingest(identity(bytesOf(name)), chunks(bytesOf(name)))
    await settle(store)
    const { bytes, ids } = packsOnDisk(store)
    assert.ok(store.stats().storedBytes <= store.stats().capacity, `${store.stats().storedBytes} > ${store.stats().capacity} after ${name}`)
    // The index counts what is on disk (every byte of every pack), and names exactly the packs there.
    assert.equal(store.stats().storedBytes, bytes)
    assert.deepEqual(store.index.packs().map(p => p.id), ids)
    assertLiveBytes(store)
  }
  const kept = names.filter(n => store.manifest(identity(bytesOf(n)).narHash) !== undefined)
  assert.ok(kept.length >= 3 && kept.includes('n13'), `kept ${kept.join(' ')}`)
  for (const name of kept) assert.ok((await collect(store.render(identity(bytesOf(name)).narHash)!)).equals(bytesOf(name)), name)
  assert.ok(store.index.packs().at(-1)!.id > 7, 'packs came and went')
  assert.deepEqual((await store.verify()).bad, [])
  await store.close()
})

test('cache gc compacts every pack with unused records: what is left on disk is what the NARs use', async () => {
  const store = await openStore({ packBytes: 4 * NAR })
  for (const name of ['a', 'b', 'c', 'd', 'e']) await store.ingest(identity(nar(name)), chunks(nar(name)))
  await store.maintenance.dropNar(identity(nar('b')).narHash.digest, true)
  await store.maintenance.dropNar(identity(nar('e')).narHash.digest, true)
  const before = packsOnDisk(store).bytes
  assert.ok(store.stats().unusedBytes >= 2 * NAR, `${store.stats().unusedBytes} bytes unused`)
  assertLiveBytes(store)
  await store.gc()
  assertLiveBytes(store)
  assert.equal(store.stats().unusedBytes, 0)
  const used = ['a', 'c', 'd'].flatMap(n => store.manifest(identity(nar(n)).narHash)!.chunks).reduce((n, c) => n + store.index.chunk(c.id)!.storedSize, 0)
  assert.ok(before > used)
  assert.equal(store.stats().storedBytes, used)
  for (const name of ['a', 'c', 'd']) assert.ok((await collect(store.render(identity(nar(name)).narHash)!)).equals(nar(name)))
  await store.close()
  assert.equal(packsOnDisk(store).bytes, used)
})

test('two stores on one state directory: neither reclaims the packs the other writes; compaction by one leaves the other reading whole NARs', async () => {
  const dir = tempDir('narswarm-chunk-')
  const reader = await openStore({ dir, db: openDatabase(stateDatabase(dir)), packBytes: 8 * NAR })
  for (const name of ['x', 'y', 'z']) await reader.ingest(identity(nar(name)), chunks(nar(name)))
  // Read once, so the reader holds a handle of the pack.
  assert.ok((await collect(reader.render(identity(nar('x')).narHash)!)).equals(nar('x')))
  const writing = reader.files.activePack!
  const other = await openStore({ dir, db: openDatabase(stateDatabase(dir)), packBytes: 8 * NAR })
  await other.maintenance.dropNar(identity(nar('y')).narHash.digest)
  await other.gc()
  assert.ok(existsPack(other, writing), 'the pack the reader writes stays while it runs')
  await reader.close()
  // Released: the other store compacts it, and the reader's successor reads from the copy.
  await other.gc()
  assert.ok(!existsPack(other, writing), 'compacted once its writer stopped')
  const successor = await openStore({ dir, db: openDatabase(stateDatabase(dir)) })
  for (const name of ['x', 'z']) assert.ok((await collect(successor.render(identity(nar(name)).narHash)!)).equals(nar(name)), name)
  assert.equal(successor.manifest(identity(nar('y')).narHash), undefined)
  assert.deepEqual((await successor.verify()).bad, [])
  await other.close()
  await successor.close()
})

test('a store reading while another compacts under it: the rows it looks up point at the copies, nothing is dropped', async () => {
  const dir = tempDir('narswarm-chunk-')
  const first = await openStore({ dir, db: openDatabase(stateDatabase(dir)) })
  for (const name of ['p', 'q']) await first.ingest(identity(nar(name)), chunks(nar(name)))
  await first.close()
  const reader = await openStore({ dir, db: openDatabase(stateDatabase(dir)) })
  const it = reader.render(identity(nar('p')).narHash)![Symbol.asyncIterator]()
  const parts = [(await it.next()).value as Uint8Array]
  const compactor = await openStore({ dir, db: openDatabase(stateDatabase(dir)) })
  await compactor.maintenance.dropNar(identity(nar('q')).narHash.digest)
  await compactor.gc()
  for (let r = await it.next(); r.done !== true; r = await it.next()) parts.push(r.value)
  assert.ok(Buffer.concat(parts).equals(nar('p')))
  assert.ok(reader.manifest(identity(nar('p')).narHash) !== undefined, 'nothing was dropped')
  await compactor.close()
  await reader.close()
})

test('start-up: the packs of a store that crashed are released, also when a later process has its pid; a running store keeps its own', async () => {
  const dir = tempDir('narswarm-chunk-')
  const db = openDatabase(stateDatabase(dir))
  const crashed = await openStore({ dir, db })
  await crashed.ingest(identity(nar('c')), chunks(nar('c')))
  const pack = crashed.files.activePack!
  // Its process gone without closing the store: same pid as this one (a container's narswarm
  // restarted), started at another time.
  db.prepare('UPDATE chunk_pack SET owner = ? WHERE id = ?').run(`${process.pid}-1-0badf00d`, pack)
  const running = await openStore({ dir, db })
  assert.equal(running.index.packs().find(p => p.id === pack)?.owner, undefined, 'released')
  assert.ok((await collect(running.render(identity(nar('c')).narHash)!)).equals(nar('c')))
  // A store of this very process is left alone.
  await running.ingest(identity(nar('d')), chunks(nar('d')))
  const own = running.files.activePack!
  await openStore({ dir, db })
  assert.equal(running.index.packs().find(p => p.id === own)?.owner, running.owner)
  await running.close()
})

/** The bytes in use the index keeps for each pack are those its chunk rows add up to. */
function assertLiveBytes (store: LocalChunkStore): void {
  const sums = new Map((store.index.db.prepare('SELECT pack, sum(stored_size) AS n FROM chunk WHERE pack IS NOT NULL GROUP BY pack').all() as Array<{ pack: number, n: number }>).map(r => [r.pack, r.n]))
  for (const pack of store.index.packs()) assert.equal(pack.live, sums.get(pack.id) ?? 0, `pack ${pack.id}`)
}

function existsPack (store: LocalChunkStore, id: number): boolean {
  return readdirSync(store.files.packs).includes(`${id}.pack`)
}
