/**
 * The peer listener and the peer filler against each other over 127.0.0.1, with in-memory chunk
 * stores (the real store and real Nix are in test/e2e/swarm.test.ts): what is shared and what is
 * not, the group key, a second version moving only the chunks it lacks, hostile and dead peers.
 */
import { afterEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { silentLogger } from '../../src/log.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { generateSecretKey, signNarInfo, verifyNarInfo } from '../../src/nix/signature.ts'
import { decompress } from '../../src/nix/compression.ts'
import { NarInfoCache } from '../../src/state/narinfo-cache.ts'
import { openDatabase } from '../../src/util/sqlite.ts'
import { SERVER_LIMIT_DEFAULTS } from '../../src/server/limits.ts'
import { GroupKey } from '../../src/peer/auth.ts'
import { PeerClient } from '../../src/peer/client.ts'
import { PeerFiller } from '../../src/peer/filler.ts'
import { peerNarInfoFallback } from '../../src/peer/narinfo-fallback.ts'
import { PEER_PATH } from '../../src/peer/protocol.ts'
import { startPeerServer, type PeerServerStats } from '../../src/peer/server.ts'
import { PeerShares } from '../../src/peer/shares.ts'
import { PeerTable } from '../../src/peer/table.ts'
import { makeEntry, type CacheEntry } from '../helpers/signed-cache.ts'
import { MemoryStore } from '../helpers/memory-store.ts'
import { startHostilePeer, startUnreachablePeer, type PeerFault } from '../helpers/hostile-peer.ts'
import { freePort } from '../helpers/net.ts'

/** What a test opened: closed after it, whether it passed or not (an open server would hold the run). */
const opened: Array<{ close: () => unknown }> = []
function track<T extends { close: () => unknown }> (thing: T): T {
  opened.push(thing)
  return thing
}
afterEach(async () => {
  for (const thing of opened.splice(0).reverse()) await thing.close()
})

const trusted = generateSecretKey('trusted-1')
const stranger = generateSecretKey('stranger-1')

function narInfoText (e: CacheEntry, key = trusted): string {
  const unsigned = NarInfo.build({ storePath: e.storePath, url: `nar/${e.narHash.toNix32()}.nar`, compression: 'none', narHash: e.narHash, narSize: e.nar.length, references: [] })
  return signNarInfo(unsigned, key.secret).toString()
}

interface Node { url: string, store: MemoryStore, cache: NarInfoCache, stats: PeerServerStats, close: () => Promise<void> }

async function startNode (entries: Array<{ entry: CacheEntry, key?: typeof trusted }>, groupKey?: GroupKey): Promise<Node> {
  const store = new MemoryStore(16_384)
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 86_400_000, negativeTtl: 60_000 })
  const shares = new PeerShares({ store, cache, trustedKeys: [trusted.public], log: silentLogger() })
  for (const { entry, key } of entries) {
    cache.putPresent(entry.hashPart, entry.narHash.toNix32(), narInfoText(entry, key), 'up')
    await store.ingest({ narHash: entry.narHash, narSize: entry.nar.length }, (async function * () { yield entry.nar })())
  }
  await shares.scan()
  const server = await startPeerServer({ store, shares, nodeId: randomBytes(16).toString('hex'), log: silentLogger(), ...(groupKey === undefined ? {} : { groupKey }) }, { host: '127.0.0.1', port: 0 })
  return track({ url: server.url, store, cache, stats: server.stats, close: async () => { shares.close(); await server.close() } })
}

function client (peers: string[], groupKey?: GroupKey, inFlight = 6): { table: PeerTable, filler: PeerFiller, client: PeerClient } {
  const table = new PeerTable({ log: silentLogger(), staticPeers: peers, probeInterval: 0 })
  const c = track(new PeerClient(groupKey === undefined ? {} : { groupKey }))
  return { table, client: c, filler: new PeerFiller({ table, client: c, log: silentLogger(), inFlight, chunkTimeouts: { answer: 1_000, stall: 500 } }) }
}

const identity = (e: CacheEntry): { narHash: CacheEntry['narHash'], narSize: number } => ({ narHash: e.narHash, narSize: e.nar.length })

async function rendered (store: MemoryStore, e: CacheEntry): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const p of store.render(e.narHash)!) parts.push(p)
  return Buffer.concat(parts)
}

test('a NAR comes from a peer chunk by chunk; version 2 moves only the chunks the node lacks', async () => {
  const v1 = makeEntry('pkg-1', randomBytes(400_000))
  const changed = Buffer.from(v1.nar)
  randomBytes(1000).copy(changed, 200_000)
  const v2 = makeEntry('pkg-2', changed)
  const node = await startNode([{ entry: v1 }, { entry: v2 }])
  const { filler, table } = client([node.url])
  const mine = new MemoryStore(16_384)
  assert.equal(await filler.fill(identity(v1), mine), true)
  assert.deepEqual(await rendered(mine, v1), v1.nar)
  assert.deepEqual(node.store.touched, [v1.narHash.toNix32()], 'a NAR served to a peer counts as a use for eviction')
  const before = table.list()[0]!.served.bytes
  assert.equal(before, v1.nar.length)
  assert.equal(await filler.fill(identity(v2), mine), true)
  assert.deepEqual(await rendered(mine, v2), v2.nar)
  const moved = table.list()[0]!.served.bytes - before
  assert.ok(moved > 0 && moved <= 2 * 16_384, `moved ${moved} bytes for a 1000-byte change`)
  assert.equal(await filler.fill(identity(makeEntry('absent')), mine), false)
})

test('chunks keep coming while none of them is durable yet; the fill ends only once all are', async () => {
  // 8 MiB at 16 KiB a chunk: far more than the 4 MiB a fill lets wait to be written.
  const entry = makeEntry('slow-disk', randomBytes(8 << 20))
  const node = await startNode([{ entry }])
  const { filler } = client([node.url])
  const held: Array<() => void> = []
  class SlowDisk extends MemoryStore {
    override async putChunk (...args: Parameters<MemoryStore['putChunk']>): Promise<void> {
      await super.putChunk(args[0], args[1])
      args[2]?.onWritten?.()
      await new Promise<void>(resolve => held.push(resolve))
    }
  }
  const mine = new SlowDisk(16_384)
  let done = false
  const fill = filler.fill(identity(entry), mine).then(r => { done = true; return r })
  const chunks = Math.ceil(entry.nar.length / 16_384)
  for (let i = 0; held.length < chunks && i < 2000; i++) await new Promise(resolve => setTimeout(resolve, 5))
  assert.equal(held.length, chunks, 'every chunk arrived before the first was durable')
  assert.equal(done, false)
  for (const release of held.splice(0)) release()
  assert.equal(await fill, true)
  assert.deepEqual(await rendered(mine, entry), entry.nar)
})

test('a request that falls behind holds the others back: the NarHash is still computed as chunks arrive', async () => {
  const entry = makeEntry('behind', randomBytes(40 << 20))
  const node = await startNode([{ entry }])
  const table = new PeerTable({ log: silentLogger(), staticPeers: [node.url], probeInterval: 0 })
  // The first chunk request is held back, as one connection of several can be on a real link,
  // while the others run: without a limit, 39 MiB would arrive ahead of it.
  class FirstRequestLate extends PeerClient {
    #first = true
    override async * chunks (...args: Parameters<PeerClient['chunks']>): ReturnType<PeerClient['chunks']> {
      if (this.#first) {
        this.#first = false
        await new Promise(resolve => setTimeout(resolve, 1_000))
      }
      return yield * super.chunks(...args)
    }
  }
  const filler = new PeerFiller({ table, client: track(new FirstRequestLate()), log: silentLogger() })
  const mine = new MemoryStore(16_384)
  const checked: Array<boolean | undefined> = []
  const commit = mine.commitManifest.bind(mine)
  mine.commitManifest = async (manifest, expected, options) => {
    checked.push(options?.narHashChecked)
    await commit(manifest, expected, options)
  }
  assert.equal(await filler.fill(identity(entry), mine), true)
  assert.deepEqual(checked, [true], 'the store was not left to read the NAR back and hash it')
  assert.deepEqual(await rendered(mine, entry), entry.nar)
})

test('a peer that lacks the NAR but holds some of its chunks serves them (have)', async () => {
  const v1 = makeEntry('pkg-1', randomBytes(200_000))
  const changed = Buffer.from(v1.nar)
  randomBytes(100).copy(changed, 150_000)
  const v2 = makeEntry('pkg-2', changed)
  const old = await startNode([{ entry: v1 }])
  const fresh = await startNode([{ entry: v2 }])
  const { filler, table } = client([fresh.url, old.url])
  // The fresh node answers slowly, so the old node gets some of the work.
  table.success(fresh.url, 1)
  table.success(old.url, 50)
  const mine = new MemoryStore(16_384)
  assert.equal(await filler.fill(identity(v2), mine), true)
  assert.deepEqual(await rendered(mine, v2), v2.nar)
  const served = Object.fromEntries(table.list().map(p => [p.url, p.served.chunks]))
  assert.equal(served[fresh.url]! + served[old.url]!, Math.ceil(200_000 / 16_384))
})

test('what no trusted key signed is never served: not its narinfo, manifest, chunks, nor that it is there', async () => {
  const signed = makeEntry('public', randomBytes(50_000))
  const unsigned = makeEntry('private', randomBytes(50_000))
  const node = await startNode([{ entry: signed }, { entry: unsigned, key: stranger }])
  const get = async (path: string): Promise<number> => (await fetch(`${node.url}${PEER_PATH}${path}`)).status
  assert.equal(await get(`/narinfo/${signed.hashPart}`), 200)
  assert.equal(await get(`/narinfo/${unsigned.hashPart}`), 404)
  assert.equal(await get(`/manifest/${signed.narHash.toNix32()}`), 200)
  assert.equal(await get(`/manifest/${unsigned.narHash.toNix32()}`), 404)
  const privateChunk = node.store.split(unsigned.nar).manifest.chunks[0]!.id
  const publicChunk = node.store.split(signed.nar).manifest.chunks[0]!.id
  assert.equal(await get(`/chunk/${Buffer.from(privateChunk).toString('hex')}`), 404)
  assert.equal(await get(`/chunk/${Buffer.from(publicChunk).toString('hex')}`), 200)
  const have = await track(new PeerClient()).have(node.url, [publicChunk, privateChunk], { answer: 1000, stall: 1000 })
  assert.deepEqual(have, [true, false])
  const { filler } = client([node.url])
  assert.equal(await filler.fill(identity(unsigned), new MemoryStore(16_384)), false)
  assert.equal(await get('/../../etc/passwd'), 404)
})

test('without a group key the listener is also a plain binary cache of what it shares, and of nothing else', async () => {
  const shared = makeEntry('public', compressible(300_000))
  const unsigned = makeEntry('private', randomBytes(50_000))
  const node = await startNode([{ entry: shared }, { entry: unsigned, key: stranger }])
  const nixAgent = { 'user-agent': 'curl/7.88.1 Nix/2.8.0' }
  const info = await fetch(`${node.url}/nix-cache-info`)
  assert.equal(info.status, 200)
  assert.match(await info.text(), /^StoreDir: \/nix\/store$/m)
  for (const headers of [{}, nixAgent]) {
    const answer = await fetch(`${node.url}/${shared.hashPart}.narinfo`, { headers })
    assert.equal(answer.status, 200)
    const narInfo = NarInfo.parse(await answer.text())
    assert.equal(narInfo.narHash.toNix32(), shared.narHash.toNix32())
    assert.ok(verifyNarInfo(narInfo, [trusted.public]).validKeyNames.length > 0, 'still signed, its URL pointing here')
    const nar = await fetch(`${node.url}/${narInfo.url}`, { headers })
    assert.equal(nar.status, 200)
    const body = Buffer.from(await nar.arrayBuffer())
    if (narInfo.compression === 'zstd') {
      assert.ok(narInfo.url.includes('.nar.zst'), 'Nix that decodes zstd gets it')
      const parts: Uint8Array[] = []
      for await (const p of decompress('zstd', (async function * () { yield body })())) parts.push(p)
      assert.ok(Buffer.concat(parts).equals(shared.nar))
    } else {
      assert.equal(narInfo.compression, 'none')
      assert.ok(body.equals(shared.nar))
    }
  }
  assert.equal(node.store.touched.length > 0, true, 'a NAR served counts as a use')
  assert.equal((await fetch(`${node.url}/${unsigned.hashPart}.narinfo`)).status, 404)
  assert.equal((await fetch(`${node.url}/nar/${unsigned.narHash.toNix32()}.nar`)).status, 404)
  assert.equal((await fetch(`${node.url}/${makeEntry('absent').hashPart}.narinfo`)).status, 404)
  assert.equal((await fetch(`${node.url}/nix-cache-info`, { method: 'POST' })).status, 405)
  // With a group key, Nix (which cannot sign its requests) gets nothing.
  const closed = await startNode([{ entry: shared }], new GroupKey('a group secret of the LAN'))
  for (const path of ['/nix-cache-info', `/${shared.hashPart}.narinfo`, `/nar/${shared.narHash.toNix32()}.nar`]) {
    assert.equal((await fetch(`${closed.url}${path}`)).status, 404, path)
  }
})

test('with a group key, a peer without it gets nothing', async () => {
  const key = new GroupKey('a group secret of the LAN')
  const entry = makeEntry('pkg', randomBytes(40_000))
  const node = await startNode([{ entry }], key)
  const path = `${PEER_PATH}/manifest/${entry.narHash.toNix32()}`
  assert.equal((await fetch(`${node.url}${path}`)).status, 401)
  assert.equal((await fetch(`${node.url}${path}`, { headers: { authorization: new GroupKey('another group secret!!').authorization('GET', path) } })).status, 403)
  const stale = key.authorization('GET', path, undefined, Date.now() - 120_000)
  assert.equal((await fetch(`${node.url}${path}`, { headers: { authorization: stale } })).status, 403)
  assert.equal((await fetch(`${node.url}${path}`, { headers: { authorization: key.authorization('GET', path) } })).status, 200)
  const outsider = client([node.url])
  assert.equal(await outsider.filler.fill(identity(entry), new MemoryStore(16_384)).catch(() => false), false)
  const member = client([node.url], key)
  assert.equal(await member.filler.fill(identity(entry), new MemoryStore(16_384)), true)
})

/** Bytes that compress: their chunks are stored, and sent to peers, as zstd frames. */
function compressible (n: number): Buffer {
  const words = ['lib', 'share', 'bin', 'store', 'nix', 'path', 'out', 'dev', 'doc', 'man']
  return Buffer.from(Array.from({ length: n / 4 }, (_, i) => words[(i * 7 + (i >> 5)) % words.length]).join(' ').slice(0, n))
}

test('compressible chunks cross compressed and are stored as they came; a node that predates it is still understood', async () => {
  const nar = Buffer.concat([compressible(600_000), randomBytes(100_000)])
  const entry = makeEntry('text', nar)
  const node = await startNode([{ entry }])
  const mine = new MemoryStore(16_384)
  assert.equal(await client([node.url]).filler.fill(identity(entry), mine), true)
  assert.deepEqual(await rendered(mine, entry), nar)
  assert.ok(mine.compressedPuts >= 30, `${mine.compressedPuts} chunks came compressed`)
  assert.ok(node.stats.bytes < nar.length / 2, `${node.stats.bytes} bytes sent for a ${nar.length}-byte NAR`)
  const legacy = track(await startHostilePeer(node.url, 'none', { legacy: true }))
  const other = new MemoryStore(16_384)
  assert.equal(await client([legacy.url]).filler.fill(identity(entry), other), true)
  assert.deepEqual(await rendered(other, entry), nar)
  assert.equal(other.compressedPuts, 0)
})

for (const [fault, content] of [['wrong-chunk', 'random'], ['wrong-chunk', 'compressible'], ['other-manifest', 'random'], ['stall', 'random'], ['vanish', 'random']] as Array<[PeerFault, string]>) {
  test(`a hostile peer (${fault}, ${content} chunks) next to a good one: the NAR arrives whole, the hostile peer is scored down`, async () => {
    const entry = makeEntry('pkg', content === 'random' ? randomBytes(3_000_000) : compressible(3_000_000))
    const good = await startNode([{ entry }])
    const hostile = track(await startHostilePeer(good.url, fault))
    const { filler, table } = client([hostile.url, good.url], undefined, 1)
    // The hostile peer ranks first, so it is asked.
    table.success(hostile.url, 1)
    table.success(good.url, 40)
    const mine = new MemoryStore(16_384)
    assert.equal(await filler.fill(identity(entry), mine), true)
    assert.deepEqual(await rendered(mine, entry), entry.nar)
    const [first, second] = table.list()
    assert.equal(first!.url, good.url)
    assert.equal(second!.url, hostile.url)
    assert.ok(second!.failures > 0)
    if (fault === 'wrong-chunk' || fault === 'other-manifest') assert.ok(second!.integrityFailures > 0)
  })
}

test('a dead peer (one that accepts and never answers) costs one timeout, then is left alone', async () => {
  const entry = makeEntry('pkg', randomBytes(30_000))
  const hanging = track(await startHostilePeer('http://127.0.0.1:9', 'dead'))
  const { filler, table } = client([`http://127.0.0.1:${await freePort()}`, hanging.url])
  const started = performance.now()
  assert.equal(await filler.fill(identity(entry), new MemoryStore(16_384)), false)
  assert.ok(performance.now() - started < 5_000)
  assert.equal(table.available().length, 0)
  assert.equal(await filler.fill(identity(entry), new MemoryStore(16_384)), false)
  assert.equal(hanging.requests.length, 1)
})

test('a peer whose host is gone costs one connect timeout, then is left alone', async t => {
  const gone = await startUnreachablePeer()
  if (gone === undefined) { t.skip('python3 is not installed'); return }
  track(gone)
  const entry = makeEntry('pkg', randomBytes(30_000))
  const { filler, table } = client([gone.url])
  assert.equal(await filler.fill(identity(entry), new MemoryStore(16_384)), false)
  const [state] = table.list()
  assert.equal(state!.failures, 1)
  assert.match(state!.lastError ?? '', /CONNECT_TIMEOUT/)
  assert.ok(state!.coolingUntil > Date.now())
  assert.equal(await filler.fill(identity(entry), new MemoryStore(16_384)), false)
  assert.equal(table.list()[0]!.failures, 1)
})

test('narinfos come from peers only when signed by a trusted key', async () => {
  const entry = makeEntry('pkg', randomBytes(10_000))
  const good = await startNode([{ entry }])
  const bad = await startNode([{ entry, key: stranger }])
  const { table, client: c } = client([good.url])
  const fallback = peerNarInfoFallback({ table, client: c, trustedKeys: [trusted.public], log: silentLogger() })
  assert.equal(await fallback(entry.hashPart), narInfoText(entry))
  assert.equal(await fallback(makeEntry('other').hashPart), undefined)
  const other = client([bad.url])
  assert.equal(await peerNarInfoFallback({ table: other.table, client: other.client, trustedKeys: [trusted.public], log: silentLogger() })(entry.hashPart), undefined)
})

test('when every peer asked first is hostile, the good one further down the table is asked next', async () => {
  const entry = makeEntry('pkg', randomBytes(2_000_000))
  const good = await startNode([{ entry }])
  const hostiles = await Promise.all((['wrong-chunk', 'stall', 'vanish'] as PeerFault[]).map(async f => track(await startHostilePeer(good.url, f))))
  const { filler, table } = client([...hostiles.map(h => h.url), good.url])
  hostiles.forEach((h, i) => table.success(h.url, i + 1))
  table.success(good.url, 40)
  const mine = new MemoryStore(16_384)
  assert.equal(await filler.fill(identity(entry), mine), true)
  assert.deepEqual(await rendered(mine, entry), entry.nar)
  assert.equal(table.list()[0]!.url, good.url)
  for (const h of hostiles) assert.ok(table.get(h.url)!.failures > 0, h.fault)
})

test('what a hostile peer can send is bounded: body sizes, batch sizes, concurrent requests', async () => {
  const store = new MemoryStore(16_384)
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 86_400_000, negativeTtl: 60_000 })
  const shares = new PeerShares({ store, cache, trustedKeys: [trusted.public], log: silentLogger() })
  const server = track(await startPeerServer({ store, shares, nodeId: 'n', log: silentLogger(), maxRequests: 1 }, { host: '127.0.0.1', port: 0 }))
  track(shares)
  const post = async (path: string, body: Buffer): Promise<number> => (await fetch(`${server.url}${PEER_PATH}${path}`, { method: 'POST', body })).status
  assert.equal(await post('/have', Buffer.alloc(8193 * 32)), 413)
  assert.equal(await post('/have', Buffer.alloc(0)), 400)
  assert.equal(await post('/have', Buffer.alloc(33)), 400)
  assert.equal(await post('/chunks', Buffer.alloc(257 * 32)), 400)
  assert.equal(await post('/have', Buffer.alloc(8192 * 32)), 200)
  assert.equal((await fetch(`${server.url}${PEER_PATH}/info`, { method: 'PUT' })).status, 405)
  // One request held open (its body never ends) fills the listener: the next gets 503.
  const { request } = await import('node:http')
  const held = request(`${server.url}${PEER_PATH}/have`, { method: 'POST', headers: { 'content-length': '64' } })
  held.on('error', () => {})
  held.write(Buffer.alloc(32))
  await new Promise(resolve => setTimeout(resolve, 100))
  const busy = await fetch(`${server.url}${PEER_PATH}/info`)
  assert.equal(busy.status, 503)
  assert.equal(busy.headers.get('retry-after'), '1')
  held.destroy()
})

test('the peer listener applies the listener limits: a peer that trickles its headers is cut off', async () => {
  const store = new MemoryStore(16_384)
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 86_400_000, negativeTtl: 60_000 })
  const shares = new PeerShares({ store, cache, trustedKeys: [trusted.public], log: silentLogger() })
  const limits = { ...SERVER_LIMIT_DEFAULTS, headersTimeout: 500, requestTimeout: 1_000 }
  const server = await startPeerServer({ store, shares, nodeId: 'n', log: silentLogger(), limits }, { host: '127.0.0.1', port: 0 })
  const socket = connect(Number(new URL(server.url).port), '127.0.0.1')
  socket.on('error', () => {})
  let received = ''
  // One header byte every 100 ms: never idle, never done; it stops once the listener answers, so
  // that a byte sent after its close cannot reset the connection under the answer.
  const trickle = setInterval(() => { if (!socket.destroyed) socket.write('X') }, 100)
  socket.on('data', d => { received += String(d); clearInterval(trickle) })
  socket.write(`GET ${PEER_PATH}/info HTTP/1.1\r\n`)
  const timeout = setTimeout(() => socket.destroy(new Error('still open after 10 s')), 10_000)
  try {
    // Not once(): a reset after the answer is an 'error' event, and the answer is what counts.
    await new Promise(resolve => socket.once('close', resolve))
    assert.match(received, /^HTTP\/1\.1 408 /, 'closed by the listener with 408, not by the test')
  } finally {
    clearInterval(trickle)
    clearTimeout(timeout)
    await server.close()
    shares.close()
  }
})
