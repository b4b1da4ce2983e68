/**
 * The LAN swarm end to end, with real narswarm processes and the real Nix over 127.0.0.1 with
 * static peers (the same scenario runs with mDNS in network namespaces in swarm-lan.test.ts): NARs
 * come from peers instead of the upstream, a fresh node installs from a peer with the upstream and
 * the first node down, version 2 moves only the chunks a node lacks, hostile and dead peers cost
 * nothing but a short timeout, and nothing unsigned or without the group key is shared.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildWideClosure, copyTo, type WideClosure } from '../helpers/closure.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { runNarswarm, startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { realiseWith, runSwarmScenario } from '../helpers/swarm.ts'
import type { SwarmStatus } from '../../src/peer/swarm.ts'

const peerArgs = (peers: string[]): string[] => peers.flatMap(p => ['--peer', p])

async function peersOf (node: NarswarmProcess): Promise<SwarmStatus> {
  return await (await fetch(`${node.url}/narswarm/peers`)).json() as SwarmStatus
}

/** A library of ~2.7 MB, an app referring to it, a top: version 2 changes one line of the library. */
const VERSIONED = `{ nonce, variant }:
let
  mk = name: script: builtins.derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin"; NONCE = nonce; VARIANT = variant;
  };
  lib = mk "lib" ''mkdir -p $out; seq 1 400000 | sed "s/^200000$/$VARIANT/" > $out/data'';
  app = mk "app" ''mkdir -p $out; seq 1 200000 > $out/appdata; echo \${lib} > $out/lib-path'';
in mk "top" ''mkdir -p $out; echo \${app} > $out/app''
`

describe('the LAN swarm with real Nix', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let wide: WideClosure
  let wideCache: string
  const stop: NarswarmProcess[] = []
  const track = (n: NarswarmProcess): NarswarmProcess => { stop.push(n); return n }

  before(async () => {
    nix = await makeNixEnv()
    wide = await buildWideClosure(nix, 110)
    wideCache = join(nix.dir, 'cache-wide')
    await copyTo(nix, wide, wideCache, 'none')
  })
  after(async () => {
    await Promise.all(stop.map(async n => await n.stop().catch(() => null)))
    await nix?.cleanup()
  })

  test('three nodes: B and C get ≥ 95 % of the closure from peers; with the upstream and A down a fresh node gets all of it from B, and so does plain Nix', async () => {
    assert.ok(wide.paths.length >= 100)
    const result = await runSwarmScenario({
      nix, closure: wide, cacheDir: wideCache,
      start: async (_name, args, peers) => track(await startNarswarm([...args, ...peerArgs(peers)]))
    })
    const { A, B, C } = result.nodes
    const fresh = result.nodes["C'"]!
    assert.ok(result.upstreamForA >= result.narBytes, `A fetched ${result.upstreamForA} of ${result.narBytes} NAR bytes from the upstream`)
    assert.ok(result.peerShare >= 0.95, `share of B's and C's NAR bytes from peers: ${(result.peerShare * 100).toFixed(1)} %`)
    assert.equal(result.freshPaths, wide.paths.length)
    assert.ok(result.freshVerified, 'every path in the fresh store has its original NarHash')
    // What each node served is counted, and `narswarm peers` shows it.
    const servedToB = (await peersOf(B!)).peers.find(p => p.url === A!.peerUrl)!
    assert.ok(servedToB.served.bytes > 0 && servedToB.served.nars > 0)
    assert.ok(C!.logs.some(l => l.msg === 'NAR filled from peers'), 'C filled NARs from peers (it is stopped by now)')
    const servedToFresh = (await peersOf(fresh)).peers.find(p => p.url === B!.peerUrl)!
    assert.ok(servedToFresh.served.bytes >= result.narBytes, 'B served the fresh node the whole closure')
    // A machine without narswarm: plain Nix takes B's peer listener as a binary cache (the upstream is down).
    const plainRoot = join(nix.dir, 'store-plain')
    await (await realiseWith(nix, wide.publicKey, wide.top))({ url: B!.peerUrl! } as NarswarmProcess, plainRoot)
    const plainPaths = JSON.parse(await nix.run('nix', ['path-info', '--store', `local?root=${plainRoot}`, '--json', '-r', wide.top])) as unknown[]
    assert.equal(plainPaths.length, wide.paths.length, 'plain Nix substituted the whole closure from the peer listener')
    const listed = await runNarswarm(['peers', '--url', B!.url])
    assert.equal(listed.code, 0, listed.stderr)
    assert.match(listed.stdout, new RegExp(`${A!.peerUrl!.replaceAll('.', '\\.')}\\s+static\\s+\\d+`))
    process.stdout.write(`# swarm: ${wide.paths.length} paths, ${result.narBytes} NAR bytes; from peers for B and C: ${(result.peerShare * 100).toFixed(1)} %\n`)
  })

  test('version 2 of a closure: a node holding version 1 moves only the chunks it lacks', async () => {
    const nonce = randomBytes(6).toString('hex')
    const file = join(nix.dir, 'versioned.nix')
    await writeFile(file, VERSIONED)
    const build = async (variant: string): Promise<string> => (await nix.run('nix-build', [file, '--no-out-link', '--argstr', 'nonce', nonce, '--argstr', 'variant', variant])).trim()
    const [v1, v2] = [await build('one'), await build('two')]
    const dir = join(nix.dir, 'cache-versions')
    await copyTo(nix, { top: v1, secretKeyFile: wide.secretKeyFile }, dir, 'none', [v1, v2])
    let upstreamNarBytes = 0
    const upstream = await startCacheServer(dir, { onServed: (path, bytes) => { if (path.startsWith('/nar/')) upstreamNarBytes += bytes } })
    try {
      const args = ['--upstream', `${upstream.url}?trusted-public-keys=${wide.publicKey}`]
      const y = track(await startNarswarm(args))
      await (await realiseWith(nix, wide.publicKey, v2))(y, join(nix.dir, 'store-y'))
      const x = track(await startNarswarm([...args, '--peer', y.peerUrl!]))
      await (await realiseWith(nix, wide.publicKey, v1))(x, join(nix.dir, 'store-x'))
      const before = upstreamNarBytes
      const fills = x.logs.length
      await (await realiseWith(nix, wide.publicKey, v2))(x, join(nix.dir, 'store-x'))
      const v2Paths = JSON.parse(await nix.run('nix', ['path-info', '--json', '-r', v2])) as Array<{ path: string, narSize: number }>
      const v2New = v2Paths.filter(p => !p.path.includes('-top') || p.path === v2)
      const v2Bytes = v2New.reduce((n, p) => n + p.narSize, 0)
      const filled = x.logs.slice(fills).filter(l => l.msg === 'NAR filled from peers')
      const moved = filled.reduce((n, l) => n + (l.bytes as number), 0)
      const reused = filled.reduce((n, l) => n + (l.reused as number), 0)
      assert.equal(upstreamNarBytes - before, 0, 'no NAR byte of version 2 came from the upstream')
      assert.equal(filled.length, 3, 'lib, app and top came from the peer')
      assert.equal(moved + reused, v2Bytes)
      assert.ok(moved > 0 && moved < 0.15 * v2Bytes, `moved ${moved} of ${v2Bytes} bytes`)
      // The chunks (lines of numbers) crossed as the peer stores them, compressed.
      const wire = filled.reduce((n, l) => n + (l.wire as number), 0)
      assert.ok(wire > 0 && wire < moved / 2, `${wire} bytes on the wire for ${moved} bytes of chunks`)
      process.stdout.write(`# version 2: moved ${moved} of ${v2Bytes} NAR bytes (${(100 * moved / v2Bytes).toFixed(1)} %), ${wire} on the wire\n`)
    } finally {
      await upstream.close()
    }
  })
})
