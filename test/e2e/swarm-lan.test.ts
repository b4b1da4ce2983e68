/**
 * The LAN swarm scenario (test/helpers/swarm.ts) as users get it, with nothing configured but the
 * upstream: each node runs in its own network namespace on a bridge this test creates and finds
 * the others by mDNS, not by static peers; the upstream, a binary cache the real Nix wrote and
 * signed, is served over HTTP from a namespace of its own and counts the NAR bytes it sends; the
 * real Nix substitutes through each node from inside the node's namespace. C′ starts in C's
 * namespace once C has stopped.
 *
 * Skipped, with the reason, without network namespaces or Nix.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLan, netnsUnavailable, type Host, type Lan } from '../helpers/netns.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'
import { buildWideClosure, copyTo } from '../helpers/closure.ts'
import { runNarswarm, startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { runSwarmScenario } from '../helpers/swarm.ts'
import type { SwarmStatus } from '../../src/peer/swarm.ts'

const CACHE_SERVER = fileURLToPath(new URL('../fixtures/cache-server.ts', import.meta.url))

/** The cache server fixture inside `host`, reporting each response it sent. */
async function startUpstreamIn (lan: Lan, host: Host, dir: string, onServed: (path: string, bytes: number) => void): Promise<{ url: string, close: () => Promise<void> }> {
  const child = lan.spawn(host, process.execPath, ['--disable-warning=ExperimentalWarning', CACHE_SERVER, dir, host.address], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise(resolve => child.once('exit', resolve))
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', code => reject(new Error(`the cache server exited (${code})`)))
    createInterface({ input: child.stdout! }).on('line', line => {
      const message = JSON.parse(line) as { url?: string, path?: string, bytes?: number }
      if (message.url !== undefined) resolve(message.url)
      else onServed(message.path!, message.bytes!)
    })
  })
  return { url, close: async () => { if (child.exitCode === null) child.kill('SIGTERM'); await exited } }
}

test('the swarm scenario with mDNS in network namespaces: B and C from peers, a fresh store on C from B alone', {
  skip: netnsUnavailable() ?? nixSkip() ?? false,
  timeout: 240_000
}, async (t) => {
  // Undone last made first: processes before their namespaces (a deleted namespace lives on while
  // a process runs in it).
  const cleanup: Array<() => unknown> = []
  t.after(async () => { for (const undo of cleanup.reverse()) await undo() })
  const nix = await makeNixEnv()
  cleanup.push(async () => await nix.cleanup())
  const closure = await buildWideClosure(nix, 110)
  const cacheDir = join(nix.dir, 'upstream')
  await copyTo(nix, closure, cacheDir, 'none')

  const lan = createLan(4)
  cleanup.push(() => lan.close())
  const [hostA, hostB, hostC, hostU] = lan.hosts as [Host, Host, Host, Host]
  const hostOf = new Map<NarswarmProcess, Host>()
  const nodeIds = new Map<NarswarmProcess, string>()

  const result = await runSwarmScenario({
    nix,
    closure,
    cacheDir,
    startUpstream: async (dir, onServed) => await startUpstreamIn(lan, hostU, dir, onServed),
    // No static peers: mDNS finds them.
    start: async (name, args) => {
      const host = { A: hostA, B: hostB, C: hostC, "C'": hostC }[name]!
      const node = await startNarswarm([...args, '--peer-listen', '0.0.0.0:0', '--discovery', 'mdns', '--discovery-interval', '1s'], { wrap: lan.wrap(host) })
      cleanup.push(async () => await node.stop())
      hostOf.set(node, host)
      nodeIds.set(node, readFileSync(join(node.stateDir, 'node-id'), 'utf8').trim())
      return node
    },
    ready: async (node, peers) => {
      for (const peer of peers) await node.waitForLog(l => l.msg === 'peer found' && l.nodeId === nodeIds.get(peer), 30_000)
    },
    realise: async (node, root) => {
      const [ip, ...exec] = lan.wrap(hostOf.get(node)!)
      const r = await nix.tryRun(ip!, [...exec, 'nix-store', '--store', `local?root=${root}`, '--realise', closure.top,
        '--option', 'substituters', node.url, '--option', 'trusted-public-keys', closure.publicKey, '--option', 'require-sigs', 'true'])
      assert.equal(r.code, 0, `nix-store --realise in ${hostOf.get(node)!.name} failed:\n${r.stderr.slice(-3000)}`)
    }
  })

  assert.ok(closure.paths.length >= 100, `a closure of ${closure.paths.length} paths`)
  assert.ok(result.upstreamForA >= result.narBytes, `A fetched ${result.upstreamForA} of ${result.narBytes} NAR bytes from the upstream`)
  t.diagnostic(`B and C: ${result.upstreamForBC} of ${2 * result.narBytes} NAR bytes from the upstream, ${(result.peerShare * 100).toFixed(1)} % from peers`)
  assert.ok(result.peerShare >= 0.95, `share of B's and C's NAR bytes from peers: ${(result.peerShare * 100).toFixed(1)} %`)
  assert.equal(result.freshPaths, closure.paths.length)
  assert.ok(result.freshVerified, 'every path in the fresh store has its original NarHash')

  // Every NAR C′ got came from B: it is the only peer that served anything.
  const fresh = result.nodes["C'"]!
  const listed = await runNarswarm(['peers', '--url', fresh.url, '--json'], { wrap: lan.wrap(hostC) })
  assert.equal(listed.code, 0, listed.stderr)
  const served = (JSON.parse(listed.stdout) as SwarmStatus).peers.filter(p => p.served.bytes > 0)
  assert.deepEqual(served.map(p => p.nodeId), [nodeIds.get(result.nodes.B!)])
  assert.equal(served[0]!.origin, 'discovered')
})
