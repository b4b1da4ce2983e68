/**
 * IPFS routing: the announcer's rate limit with mocked timers, and a real LAN DHT — three embedded
 * nodes on 127.0.0.1: the publisher's announcement succeeds against the DHT, and the fetcher, which
 * knows only the DHT's first node, reaches the publisher through it.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { silentLogger } from '../../src/log.ts'
import { Announcer } from '../../src/backend/ipfs/announcer.ts'
import { cidOf } from '../../src/backend/ipfs/locator.ts'
import { embeddedNode } from '../helpers/ipfs.ts'
import { tempDir } from '../helpers/temp.ts'
import { sha256Hex, sourceDigest, upload } from '../helpers/bytes.ts'


describe('ipfs announcer', () => {
  it('announces roots in batches, at most one batch per interval, each root once', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const provided: Array<{ at: number, cid: string }> = []
    const announcer = new Announcer(async cid => { provided.push({ at: Date.now(), cid: cid.toString() }) }, { batch: 2, interval: 1000, log: silentLogger() })
    const roots = await Promise.all([1, 2, 3, 4, 5].map(async i => CID.createV1(0x55, await sha256.digest(new Uint8Array([i])))))
    for (const root of roots) announcer.add(root)
    announcer.add(roots[0]!) // again: still one announcement
    const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }
    t.mock.timers.tick(0)
    await settle()
    assert.equal(provided.length, 2)
    t.mock.timers.tick(999)
    await settle()
    assert.equal(provided.length, 2, 'nothing more before the interval has passed')
    t.mock.timers.tick(1)
    await settle()
    assert.equal(provided.length, 4)
    t.mock.timers.tick(1000)
    await settle()
    assert.deepEqual(provided.map(p => p.cid).sort(), roots.map(r => r.toString()).sort())
    assert.deepEqual(provided.map(p => p.at), [0, 0, 1000, 1000, 2000])
    assert.equal(announcer.pending, 0)
    assert.equal(announcer.announced, 5)
    await announcer.close()
  })
})

describe('ipfs routing=lan-dht on 127.0.0.1', () => {
  it('the publisher announces to the LAN DHT; a node that knows only the DHT\'s first node reaches it and fetches', { timeout: 120_000 }, async () => {
    const options = 'routing=lan-dht&announce-interval=100ms'
    const dht = await embeddedNode(options, await tempDir())
    const publisher = await embeddedNode(`${options}&bootstrap=${dht.multiaddrs[0]}`, await tempDir())
    const fetcher = await embeddedNode(`${options}&bootstrap=${dht.multiaddrs[0]}&timeout=60s`, await tempDir())
    try {
      const bytes = randomBytes(3 << 20)
      const locator = await publisher.publish(upload(bytes))
      for (let i = 0; i < 100 && publisher.announcedRoots === 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
      assert.equal(publisher.announcedRoots, 1, 'the root was provided to the DHT')
      // The DHT holds the record: asked through it, the publisher is a provider of the root.
      const publisherId = publisher.multiaddrs[0]!.split('/p2p/')[1]!
      let listed = false
      for await (const id of fetcher.providers(cidOf(locator.url)!, { signal: AbortSignal.timeout(30_000) })) {
        if (id === publisherId) { listed = true; break }
      }
      assert.ok(listed, 'the DHT lists the publisher as a provider of the root')
      const source = await fetcher.open(locator)
      assert.ok(source !== undefined)
      assert.equal(await sourceDigest(source), sha256Hex(bytes))
      assert.ok(fetcher.networkBytes >= bytes.length, 'the bytes came from the publisher')
    } finally {
      await fetcher.close()
      await publisher.close()
      await dht.close()
    }
  })
})
