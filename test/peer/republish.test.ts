import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { silentLogger } from '../../src/log.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { NarInfoCache } from '../../src/state/narinfo-cache.ts'
import { openDatabase } from '../../src/util/sqlite.ts'
import { Republisher } from '../../src/peer/republish.ts'
import { PeerShares } from '../../src/peer/shares.ts'
import type { Backend, Locator, Mapper, NarUpload } from '../../src/types.ts'
import type { NixHash } from '../../src/nix/hash.ts'
import { makeEntry } from '../helpers/signed-cache.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

test('each shared NAR the store commits is published to IPFS/BitTorrent backends and recorded with its signed narinfo; unsigned ones are not', async () => {
  const trusted = generateSecretKey('trusted-1')
  const stranger = generateSecretKey('stranger-1')
  const store = new MemoryStore(16_384)
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 86_400_000, negativeTtl: 60_000 })
  const shares = new PeerShares({ store, cache, trustedKeys: [trusted.public], log: silentLogger() })
  const published: Array<{ backend: string, bytes: number }> = []
  const backend = (name: string, scheme: string, fail = false): Backend => ({
    name,
    schemes: [scheme],
    open: async () => undefined,
    publish: async (nar: NarUpload): Promise<Locator> => {
      let bytes = 0
      for await (const b of nar.body) bytes += b.length
      if (fail) throw new Error('swarm unreachable')
      published.push({ backend: name, bytes })
      return { url: `${scheme}:${nar.narHash.toNix32()}`, compression: 'none' }
    }
  })
  const recorded: Array<{ narHash: string, url: string, narInfo?: string }> = []
  const mapper: Mapper = {
    name: 'index',
    lookup: async () => [],
    record: async (narHash: NixHash, locator: Locator, options?: { narInfo?: string }) => {
      recorded.push({ narHash: narHash.toNix32(), url: locator.url, ...(options?.narInfo === undefined ? {} : { narInfo: options.narInfo }) })
    }
  }
  const republisher = new Republisher({
    store, shares, mapper, log: silentLogger(),
    backends: [backend('ipfs', 'ipfs'), backend('torrent', 'magnet'), backend('mirror', 'https'), backend('broken', 'ipfs', true)]
  })
  const add = async (key: typeof trusted): Promise<ReturnType<typeof makeEntry>> => {
    const e = makeEntry('pkg', randomBytes(50_000))
    const unsigned = NarInfo.build({ storePath: e.storePath, url: 'nar/x.nar', compression: 'none', narHash: e.narHash, narSize: e.nar.length, references: [] })
    cache.putPresent(e.hashPart, e.narHash.toNix32(), signNarInfo(unsigned, key.secret).toString(), 'up')
    await store.ingest({ narHash: e.narHash, narSize: e.nar.length }, (async function * () { yield e.nar })())
    return e
  }
  const shared = await add(trusted)
  await add(stranger)
  await republisher.idle()
  assert.deepEqual(published, [{ backend: 'ipfs', bytes: 50_000 }, { backend: 'torrent', bytes: 50_000 }])
  assert.deepEqual(recorded.map(r => r.url).sort(), [`ipfs:${shared.narHash.toNix32()}`, `magnet:${shared.narHash.toNix32()}`])
  assert.ok(recorded.every(r => r.narInfo?.includes(`StorePath: ${shared.storePath}`)))
  assert.equal(republisher.published, 2)
  assert.equal(republisher.failed, 1)
  await republisher.close()
})
