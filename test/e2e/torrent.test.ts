/**
 * BitTorrent end to end, with the real Nix client and several narswarm processes on 127.0.0.1, a
 * tracker started here, no DHT and no outside network. Node A publishes the NARs of a real closure
 * as torrents and serves its index; node B, fresh, with the upstream down, learns the locators from
 * A's index and substitutes the whole closure from the swarm. Then, with no peer online at all, a
 * third node substitutes it from the torrents' web seed alone (an uncompressed binary cache). And a
 * swarm that never answers does not hold Nix up: the hedged race starts the upstream as well.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, type Closure } from '../helpers/closure.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { freePort } from '../helpers/net.ts'
import { publishCache } from '../helpers/publish.ts'
import { startTracker, type Tracker } from '../helpers/torrent-tracker.ts'

describe('substitution over BitTorrent with the real Nix client', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let tracker: Tracker
  let cache: string
  let deadUpstream: string
  let run = 0
  const stateDirs: string[] = []

  /** Loopback only: no DHT, local discovery, peer exchange, uTP or port mapping. */
  const spec = (extra = ''): string =>
    `torrent:?dht=false&lsd=false&pex=false&utp=false&port=0&tracker=${encodeURIComponent(tracker.announce)}${extra}`

  before(async () => {
    nix = await makeNixEnv()
    tracker = await startTracker()
    closure = await buildClosure(nix, { withBig: false })
    // Uncompressed: its files are the NARs themselves, named by NarHash, so it can be a web seed.
    cache = join(nix.dir, 'cache')
    await copyTo(nix, closure, cache, 'none')
    deadUpstream = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${closure.publicKey}`
  })
  after(async () => {
    await tracker?.close()
    for (const d of stateDirs) await rm(d, { recursive: true, force: true })
    await nix?.cleanup()
  })

  async function stateDir (): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'narswarm-torrent-e2e-'))
    stateDirs.push(d)
    return d
  }

  async function substituteFrom (node: NarswarmProcess): Promise<void> {
    const store = `local?root=${join(nix.dir, `store-${run++}`)}`
    await nix.run('nix-store', ['--store', store, '--realise', closure.top,
      '--option', 'substituters', node.url, '--option', 'trusted-public-keys', closure.publicKey])
    await nix.run('nix', ['store', 'verify', '--store', store, '--trusted-public-keys', closure.publicKey, '-r', closure.top])
    const fresh = JSON.parse(await nix.run('nix', ['path-info', '--store', store, '--json', '-r', closure.top])) as Array<{ path: string }>
    assert.deepEqual(fresh.map(p => p.path).sort(), closure.paths)
    for (const path of closure.paths) {
      const served = await node.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
      assert.equal(served.source, 'torrent', `${path} came from the torrent backend`)
    }
  }

  test('node A publishes and seeds; node B, fresh, substitutes the closure from the swarm', async () => {
    const stateA = await stateDir()
    const published = await publishCache({ cacheDir: cache, publicKey: closure.publicKey, backend: spec(), stateDir: stateA })
    assert.equal(published.length, closure.paths.length)
    assert.ok(published.every(p => p.locators.length === 1 && p.locators[0]!.url.startsWith('magnet:?xt=urn:btih:')))
    const common = ['--upstream', deadUpstream, '--trusted-public-keys', closure.publicKey, '--hedge-delay', '100ms']
    const a = await startNarswarm(['--state-dir', stateA, '--backend', spec(), ...common])
    try {
      await a.waitForLog(l => l.msg === 'torrents resumed' && l.seeding === published.length)
      const b = await startNarswarm(['--mapper', `http+${a.url}/`, '--backend', spec(), ...common])
      try {
        await substituteFrom(b)
        assert.ok(b.logs.some(l => l.msg === 'seeding a fetched NAR'), 'B seeds what it fetched')
        // Exiting by itself on SIGTERM means the BitTorrent client left no socket or timer behind.
        assert.equal(await b.stop(), 0, 'B shut down cleanly')
      } finally { await b.stop() }
      assert.equal(await a.stop(), 0, 'A shut down cleanly')
    } finally { await a.stop() }
  })

  test('with no peer online, the web seed alone delivers the closure', async () => {
    const server = await startCacheServer(cache)
    try {
      const statePublisher = await stateDir()
      const index = join(await stateDir(), 'index')
      // Published and gone: nobody seeds; the magnet links carry the web seed.
      await publishCache({ cacheDir: cache, publicKey: closure.publicKey, backend: spec(`&web-seed=${server.url}/`), mapper: `folder://${index}`, stateDir: statePublisher })
      const c = await startNarswarm(['--mapper', `folder://${index}`, '--backend', spec('&metadata-timeout=1s'),
        '--upstream', deadUpstream, '--trusted-public-keys', closure.publicKey])
      try {
        await substituteFrom(c)
        assert.ok(server.requests.filter(r => r.startsWith('GET /nar/')).length >= closure.paths.length)
        assert.ok(c.logs.some(l => l.msg === 'seeding a NAR fetched from its web seed'))
      } finally { await c.stop() }
    } finally { await server.close() }
  })

  test('a swarm with nobody in it does not hold up substitution: the upstream starts after the untrusted budget', async () => {
    const upstream = await startCacheServer(cache)
    try {
      const index = join(await stateDir(), 'index')
      await publishCache({ cacheDir: cache, publicKey: closure.publicKey, backend: spec(), mapper: `folder://${index}`, stateDir: await stateDir() })
      // The torrents are in the index but nobody seeds them, and the swarm is given all the time in the world.
      const d = await startNarswarm(['--mapper', `folder://${index}`, '--backend', spec('&metadata-timeout=10m'),
        '--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`, '--trusted-public-keys', closure.publicKey, '--untrusted-budget', '1s'])
      try {
        const store = `local?root=${join(nix.dir, `store-${run++}`)}`
        await nix.run('nix-store', ['--store', store, '--realise', closure.top,
          '--option', 'substituters', d.url, '--option', 'trusted-public-keys', closure.publicKey])
        for (const path of closure.paths) {
          const served = await d.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
          assert.notEqual(served.source, 'torrent')
        }
        assert.ok(upstream.requests.filter(r => r.startsWith('GET /nar/')).length >= closure.paths.length)
      } finally { await d.stop() }
    } finally { await upstream.close() }
  })
})
