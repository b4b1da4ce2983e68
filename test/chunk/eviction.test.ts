import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LocalChunkStore } from '../../src/chunk/store.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { identity, openStore } from './helpers.ts'

const NAR = 300_000
const nar = (name: string): Buffer => pseudoRandom(name, NAR)
const has = (store: LocalChunkStore, name: string): boolean => {
  const held = store.manifest(identity(nar(name)).narHash) !== undefined
  // The cheap presence check agrees with the manifest.
  assert.equal(store.narSize(identity(nar(name)).narHash) !== undefined, held)
  return held
}

async function settle (store: LocalChunkStore): Promise<void> {
  await sleep(30)
  await store.maintenance.idle()
}

async function put (store: LocalChunkStore, name: string): Promise<void> {
  await store.ingest(identity(nar(name)), chunks(nar(name)))
}

test('LRU eviction by NAR: above the cap, least recently used first, down to the low-water mark', async () => {
  let clock = 1000
  // Room for three NARs (random bytes are stored raw: 300,000 bytes + headers each).
  const store = await openStore({ capacity: 3 * NAR + 10_000, freshLease: 5, now: () => clock++ })
  for (const name of ['a', 'b', 'c']) await put(store, name)
  await settle(store)
  assert.deepEqual(['a', 'b', 'c'].map(n => has(store, n)), [true, true, true])
  await collect(store.render(identity(nar('a')).narHash)!)
  await put(store, 'd')
  await settle(store)
  // Room for d below the low-water mark (90 %) took two NARs: b, the least recently used, then c;
  // a was rendered after c was stored.
  assert.deepEqual(['a', 'b', 'c', 'd'].map(n => has(store, n)), [true, false, false, true])
  for (const name of ['e', 'f', 'g']) {
    await put(store, name)
    await settle(store)
    assert.ok(store.stats().storedBytes <= store.stats().capacity, `${store.stats().storedBytes} > ${store.stats().capacity}`)
  }
  assert.deepEqual(['e', 'f', 'g'].map(n => has(store, n)), [true, true, true])
  await store.close()
})

test('pinned NARs are never evicted; unpinned they are', async () => {
  const store = await openStore({ capacity: 2 * NAR + 10_000, freshLease: 5 })
  await store.ingest(identity(nar('p'), '/nix/store/pppppppppppppppppppppppppppppppp-p'), chunks(nar('p')))
  assert.ok(store.pin(identity(nar('p')).narHash))
  assert.ok(!store.pin(identity(nar('absent')).narHash))
  for (const name of ['q', 'r', 's', 't']) { await put(store, name); await settle(store) }
  assert.ok(has(store, 'p'))
  assert.equal(store.stats().pinned, 1)
  assert.ok(store.pin(identity(nar('p')).narHash, false))
  await put(store, 'u')
  await settle(store)
  assert.ok(!has(store, 'p'))
  await store.close()
})

test('cache-size 0: a NAR is served to whoever waits for it, then evicted', async () => {
  const store = await openStore({ capacity: 0, freshLease: 100 })
  const bytes = pseudoRandom('zero', 2_000_000)
  const id = identity(bytes)
  await store.ingest(id, chunks(bytes))
  // The request that waited for the commit renders it, slowly: its reader keeps the NAR.
  const it = store.render(id.narHash)![Symbol.asyncIterator]()
  const parts = [(await it.next()).value as Uint8Array]
  await sleep(150)
  await store.maintenance.idle()
  for (let r = await it.next(); r.done !== true; r = await it.next()) parts.push(r.value)
  assert.ok(Buffer.concat(parts).equals(bytes))
  await sleep(150)
  await store.maintenance.idle()
  assert.equal(store.manifest(id.narHash), undefined)
  assert.equal(store.stats().storedBytes, 0)
  await store.close()
})

test('a NAR being rendered is not evicted under its reader', async () => {
  const store = await openStore({ capacity: 2_200_000, freshLease: 5 })
  const big = pseudoRandom('reader', 2_000_000)
  await store.ingest(identity(big), chunks(big))
  await settle(store)
  const it = store.render(identity(big).narHash)![Symbol.asyncIterator]()
  const first = await it.next()
  await put(store, 'x')
  await settle(store)
  const rest = [first.value as Uint8Array]
  for (let r = await it.next(); r.done !== true; r = await it.next()) rest.push(r.value)
  assert.ok(Buffer.concat(rest).equals(big))
  // The cap was kept by evicting what was not in use: the NAR that came in after.
  assert.ok(store.manifest(identity(big).narHash) !== undefined)
  assert.ok(!has(store, 'x'))
  assert.ok(store.stats().storedBytes <= store.stats().capacity)
  await store.close()
})
