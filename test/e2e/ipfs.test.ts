/**
 * IPFS end to end, with the real Nix client and only 127.0.0.1 traffic. Node A publishes the NARs
 * of two real closures (built here by Nix) into its embedded IPFS node and records them in its
 * index, then runs `narswarm serve` on that state directory so it serves blocks to the swarm and
 * its index at /narswarm/v1/. Node B starts fresh, with the upstream down, reads A's index over
 * HTTP and gets every NAR from A (as CAR streams from the trustless gateway A serves over plain HTTP,
 * bitswap for anything those miss); Nix substitutes both closures from B.
 *
 * The second closure differs from the first only by a rebuilt dependency: its dependency's
 * version file and store path changed, and so did the application that refers to it. B already
 * holds the first closure's blocks, so it must fetch only a fraction of the second closure's bytes
 * (measured from B's own log and, independently, from the growth of B's blockstore).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { startNarswarm, type LogLine, type NarswarmProcess } from '../helpers/narswarm.ts'
import { publishCache } from '../helpers/publish.ts'
import { freePort } from '../helpers/net.ts'

// lib is the same in both closures; dep is rebuilt (new DEP_VERSION); app refers to dep, so it
// is rebuilt too. Each holds about 4.5 MB of deterministic, incompressible-looking text.
const EXPRESSION = `{ nonce, depVersion }:
let
  mk = name: script: builtins.derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin"; NONCE = nonce;
  };
  data = seed: "awk 'BEGIN { srand(" + seed + "); for (i = 0; i < 500000; i++) printf \\"%08x\\\\n\\", int(rand() * 4294967296) }'";
  lib = mk "lib" ("mkdir -p $out; echo $NONCE > $out/nonce; " + data "1" + " > $out/lib.dat");
  dep = (mk "dep" ("mkdir -p $out; echo $NONCE > $out/nonce; echo " + depVersion + " > $out/version; " + data "2" + " > $out/dep.dat"));
  app = mk "app" ("mkdir -p $out/bin; echo " + lib + " > $out/lib-path; " + data "3" + " > $out/app.dat; echo " + dep + " > $out/dep-path");
in app
`

async function dirBytes (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  }
  return total
}

describe('IPFS: a closure published by node A, substituted through node B', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let publicKey: string
  const tops: string[] = []
  const caches: string[] = []
  let stateA: string
  let a: NarswarmProcess | undefined
  let b: NarswarmProcess | undefined
  let deadUpstream: string

  before(async () => {
    nix = await makeNixEnv()
    const file = join(nix.dir, 'closure.nix')
    await writeFile(file, EXPRESSION)
    const nonce = Math.random().toString(36).slice(2)
    const secret = (await nix.run('nix', ['key', 'generate-secret', '--key-name', `narswarm-ipfs-${nonce}`])).trim()
    await writeFile(join(nix.dir, 'secret'), secret)
    publicKey = (await nix.run('nix', ['key', 'convert-secret-to-public'], { input: secret })).trim()
    for (const version of ['1.0', '1.1']) {
      const top = (await nix.run('nix-build', [file, '--no-out-link', '--argstr', 'nonce', nonce, '--argstr', 'depVersion', version])).trim()
      const cache = join(nix.dir, `cache-${version}`)
      await nix.run('nix', ['copy', '--to', `file://${cache}?compression=zstd&secret-key=${join(nix.dir, 'secret')}`, top])
      tops.push(top)
      caches.push(cache)
    }
    deadUpstream = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${publicKey}`
    stateA = await mkdtemp(join(tmpdir(), 'narswarm-ipfs-a-'))
  })
  after(async () => {
    await b?.stop()
    await a?.stop()
    await nix?.cleanup()
    if (stateA !== undefined) await rm(stateA, { recursive: true, force: true })
  })

  test('A publishes, B serves both closures to Nix from IPFS, and the second moves only its new blocks', async () => {
    const portA = await freePort()
    // A also serves its blocks over plain HTTP, which B prefers to its libp2p connection.
    const specA = `ipfs:?listen=/ip4/127.0.0.1/tcp/${portA}&routing=none&gateway-listen=/ip4/127.0.0.1/tcp/0`
    // Published by the real command into A's state directory, whose node then serves the blocks.
    const published = []
    for (const cache of caches) published.push(await publishCache({ cacheDir: cache, publicKey, backend: specA, stateDir: stateA }))
    assert.ok(published.every(p => p.every(e => e.locators.length === 1 && e.locators[0]!.url.startsWith('ipfs://'))))

    a = await startNarswarm(['--state-dir', stateA, '--backend', specA, '--upstream', deadUpstream, '--trusted-public-keys', publicKey])
    const listening = await a.waitForLog(l => l.msg === 'ipfs node listening')
    const addrA = (listening.addresses as string[])[0]!
    assert.match(addrA, new RegExp(`^/ip4/127.0.0.1/tcp/${portA}/p2p/`))
    assert.match(String((listening.httpGateway as string[])[0]), /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/http$/)

    b = await startNarswarm(['--mapper', `http+${a.url}`, '--backend', `ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none&bootstrap=${addrA}`,
      '--upstream', deadUpstream, '--trusted-public-keys', publicKey, '--hedge-delay', '100ms'])
    await b.waitForLog(l => l.msg === 'ipfs node listening')
    const blocksB = join(b.stateDir, 'ipfs', 'packs')

    const fetched = (from: number): LogLine[] => b!.logs.slice(from).filter(l => l.msg === 'ipfs file read')
    const results: Array<{ narBytes: number, networkBytes: number, carBytes: number, storeGrowth: number }> = []
    for (const [i, top] of tops.entries()) {
      const mark = b.logs.length
      const storeBefore = await dirBytes(blocksB)
      const store = `local?root=${join(nix.dir, `store-b-${i}`)}`
      await nix.run('nix-store', ['--store', store, '--realise', top, '--option', 'substituters', b.url, '--option', 'trusted-public-keys', publicKey])
      await nix.run('nix', ['store', 'verify', '--store', store, '--trusted-public-keys', publicKey, '-r', top])
      const paths = (await nix.run('nix-store', ['--store', store, '-qR', top])).trim().split('\n')
      for (const path of paths) await b.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
      const served = b.logs.slice(mark).filter(l => l.msg === 'NAR served')
      // The paths the second closure shares with the first come from B's chunk store.
      const fromIpfs = served.filter(l => String(l.source).startsWith('ipfs'))
      assert.ok(served.every(l => String(l.source).startsWith('ipfs') || (i > 0 && l.source === 'store')), 'every NAR came from IPFS or, shared, from the store')
      assert.ok(fromIpfs.length > 0)
      await b.waitForLog(() => fetched(mark).length >= fromIpfs.length)
      const narBytes = published[i]!.reduce((sum, e) => sum + e.narInfo.narSize, 0)
      results.push({ narBytes, networkBytes: fetched(mark).reduce((s, l) => s + Number(l.networkBytes), 0), carBytes: fetched(mark).reduce((s, l) => s + Number(l.carBytes), 0), storeGrowth: (await dirBytes(blocksB)) - storeBefore })
    }
    const [first, second] = results as [typeof results[0], typeof results[0]]
    console.log(`# closure 1: ${first.narBytes} NAR bytes, ${first.networkBytes} from A (${first.carBytes} in CAR streams); closure 2: ${second.narBytes} NAR bytes, ${second.networkBytes} from A (${(100 * second.networkBytes / second.narBytes).toFixed(1)} %), blockstore grew ${second.storeGrowth}`)
    assert.ok(first.networkBytes >= first.narBytes, 'the first closure really came over the network')
    assert.ok(first.carBytes >= first.narBytes, 'as CAR streams from A\'s gateway')
    assert.ok(b.logs.some(l => l.msg === 'ipfs CAR stream from peer over http'), 'over plain HTTP')
    assert.ok(second.networkBytes < 0.5 * second.narBytes, `closure 2 moved ${second.networkBytes} of ${second.narBytes} bytes`)
    assert.ok(second.storeGrowth < 0.5 * second.narBytes, `B's blockstore grew ${second.storeGrowth} bytes for closure 2`)
    // Closing the proxy stops the node cleanly.
    assert.equal(await b.stop(), 0, 'B shut down cleanly')
    assert.ok(b.logs.some(l => l.msg === 'ipfs node stopped'), 'B stopped its IPFS node')
    assert.equal(await a!.stop(), 0, 'A shut down cleanly')
  })
})
