/**
 * The LAN swarm as users get it, with nothing configured but the upstream: three narswarm nodes,
 * each in its own network namespace on a bridge this test creates, find each other by mDNS; the
 * upstream is a binary cache the real Nix wrote and signed, served over HTTP from a fourth
 * namespace, counting the bytes it sends. The real Nix substitutes through each node.
 *
 *   1. A substitutes a closure of more than 100 paths (from the upstream).
 *   2. B and C substitute it with the upstream up: at least 95 % of the NAR bytes come from peers.
 *   3. Upstream, A and C stopped: a fresh store on C's host, through a second node there that
 *      holds nothing (it started with the others, so it is already known), gets the whole closure,
 *      narinfos and NARs, from B.
 *
 * Skipped, with the reason, without network namespaces or Nix.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, statSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLan, netnsUnavailable, type Host, type Lan } from '../helpers/netns.ts'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildWideClosure, copyTo, type WideClosure } from '../helpers/closure.ts'
import { runNarswarm, startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import type { SwarmStatus } from '../../src/peer/swarm.ts'

const CACHE_SERVER = fileURLToPath(new URL('../fixtures/cache-server.ts', import.meta.url))

interface Upstream { url: string, narBytes: () => number, stop: () => Promise<void> }

/** The cache server fixture inside `host`, counting the NAR bytes it sends. */
async function startUpstream (lan: Lan, host: Host, dir: string): Promise<Upstream> {
  const child = lan.spawn(host, process.execPath, ['--disable-warning=ExperimentalWarning', CACHE_SERVER, dir, host.address], { stdio: ['ignore', 'pipe', 'inherit'] })
  let narBytes = 0
  const lines = createInterface({ input: child.stdout! })
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', code => reject(new Error(`the cache server exited (${code})`)))
    lines.on('line', line => {
      const message = JSON.parse(line) as { url?: string, path?: string, bytes?: number }
      if (message.url !== undefined) resolve(message.url)
      else if (message.path?.startsWith('/nar/') === true) narBytes += message.bytes!
    })
  })
  const exited = new Promise(resolve => child.once('exit', resolve))
  return { url, narBytes: () => narBytes, stop: async () => { if (child.exitCode === null) child.kill('SIGTERM'); await exited } }
}

function dirBytes (dir: string): number {
  return readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0)
}

test('three nodes that found each other by mDNS share a closure: peers serve the second and third install, and the last survives the upstream', {
  skip: netnsUnavailable() ?? nixSkip() ?? false,
  timeout: 240_000
}, async (t) => {
  const t0 = performance.now()
  const mark = (what: string): void => t.diagnostic(`${what}: ${Math.round(performance.now() - t0)} ms`)
  // Undone last made first: processes before their namespaces (a deleted namespace lives on while
  // a process runs in it).
  const cleanup: Array<() => unknown> = []
  t.after(async () => { for (const undo of cleanup.reverse()) await undo() })
  const nix: NixEnv = await makeNixEnv()
  cleanup.push(async () => await nix.cleanup())
  const closure: WideClosure = await buildWideClosure(nix, 110)
  assert.ok(closure.paths.length >= 100, `a closure of ${closure.paths.length} paths`)
  const cacheDir = join(nix.dir, 'upstream')
  await copyTo(nix, closure, cacheDir, 'zstd')
  const totalNarBytes = dirBytes(join(cacheDir, 'nar'))
  mark('closure built and copied')

  const lan = createLan(4)
  cleanup.push(() => lan.close())
  const [hostA, hostB, hostC, hostU] = lan.hosts as [Host, Host, Host, Host]
  const upstream = await startUpstream(lan, hostU, cacheDir)
  cleanup.push(async () => await upstream.stop())
  const start = async (host: Host): Promise<NarswarmProcess> => {
    const node = await startNarswarm([
      '--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`,
      '--peer-listen', '0.0.0.0:0', '--discovery', 'mdns', '--discovery-interval', '1s'
    ], { wrap: lan.wrap(host) })
    cleanup.push(async () => await node.stop())
    return node
  }
  const status = async (host: Host, node: NarswarmProcess): Promise<SwarmStatus> => {
    const r = await runNarswarm(['peers', '--url', node.url, '--json'], { wrap: lan.wrap(host) })
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as SwarmStatus
  }
  /** Waits until `node` has found `count` peers by mDNS. */
  const knows = async (node: NarswarmProcess, count: number): Promise<void> => {
    await node.waitForLog(() => node.logs.filter(l => l.msg === 'peer found').length >= count, 30_000)
  }
  const substitute = async (host: Host, node: NarswarmProcess, name: string): Promise<void> => {
    const store = `local?root=${join(nix.dir, name)}`
    const r = await lan.run(host, 'nix-store', ['--store', store, '--realise', closure.top,
      '--option', 'substituters', node.url, '--option', 'trusted-public-keys', closure.publicKey, '--option', 'require-sigs', 'true'], { env: nix.env })
    assert.equal(r.code, 0, `nix-store --realise in ${host.name} failed:\n${r.stderr.slice(-3000)}`)
    const valid = await lan.run(host, 'nix-store', ['--store', store, '--check-validity', ...closure.paths], { env: nix.env })
    assert.equal(valid.code, 0, valid.stderr)
  }

  const [a, b, c, fresh] = await Promise.all([start(hostA), start(hostB), start(hostC), start(hostC)]) as [NarswarmProcess, NarswarmProcess, NarswarmProcess, NarswarmProcess]
  await Promise.all([a, b, c, fresh].map(async node => await knows(node, 3)))
  mark('nodes started and found each other')

  // 1. A fetches everything from the upstream.
  await substitute(hostA, a, 'store-a')
  mark('A substituted')
  const afterA = upstream.narBytes()
  assert.ok(afterA >= totalNarBytes, `A took ${afterA} of ${totalNarBytes} NAR bytes from the upstream`)

  // 2. B and C: the NARs come from peers.
  await Promise.all([substitute(hostB, b, 'store-b'), substitute(hostC, c, 'store-c')])
  mark('B and C substituted')
  const fromUpstream = upstream.narBytes() - afterA
  const share = 1 - fromUpstream / (2 * totalNarBytes)
  t.diagnostic(`B and C: ${fromUpstream} of ${2 * totalNarBytes} NAR bytes from the upstream; ${(share * 100).toFixed(1)} % from peers`)
  assert.ok(share >= 0.95, `only ${(share * 100).toFixed(1)} % of NAR bytes came from peers`)
  const servedToC = (await status(hostC, c)).peers.reduce((sum, p) => sum + p.served.bytes, 0)
  assert.ok(servedToC > 0, 'C counts bytes served by its peers')

  // 3. Upstream, A and C gone: only B holds the closure.
  await upstream.stop()
  assert.equal(await a.stop(), 0)
  assert.equal(await c.stop(), 0)
  await substitute(hostC, fresh, 'store-c2')
  mark('fresh store on C substituted')
  const peers = (await status(hostC, fresh)).peers
  const fromB = peers.find(p => p.url.includes(`//${hostB.address}:`))
  assert.ok(fromB !== undefined, `B is among C's peers: ${JSON.stringify(peers.map(p => p.url))}`)
  assert.ok(fromB.served.bytes > 0, 'B served the NARs')
  assert.equal(peers.filter(p => p !== fromB).reduce((sum, p) => sum + p.served.bytes, 0), 0, 'nobody but B served anything')
})
