/**
 * The LAN swarm scenario with real narswarm processes and the real Nix, written once so that it
 * runs over 127.0.0.1 with static peers (test/e2e/swarm.test.ts) and in network namespaces with
 * mDNS discovery (test/e2e/swarm-lan.test.ts): the caller says how a node starts (`start`), how
 * Nix reaches it (`realise`), when it has found its peers (`ready`) and where the upstream runs
 * (`startUpstream`).
 *
 * 1. Node A substitutes the closure from the upstream.
 * 2. Nodes B and C (knowing A; C also B) substitute it at once with the upstream up; the upstream
 *    counts the NAR bytes it sends.
 * 3. The upstream, A and C stop; a fresh node C' with a fresh Nix store substitutes the closure,
 *    which only B holds now.
 */
import { join } from 'node:path'
import type { NixEnv } from './nix.ts'
import { startCacheServer } from './cache-server.ts'
import type { NarswarmProcess } from './narswarm.ts'

export interface SwarmClosure {
  top: string
  paths: string[]
  publicKey: string
}

export interface SwarmScenarioInit {
  nix: NixEnv
  closure: SwarmClosure
  /** A binary cache of the closure with uncompressed NARs (so file bytes are NAR bytes). */
  cacheDir: string
  /**
   * Serves `cacheDir` as the upstream, calling `onServed` for each response that ended; default: a
   * cache server in this process on 127.0.0.1.
   */
  startUpstream?: (cacheDir: string, onServed: (path: string, bytes: number) => void) => Promise<{ url: string, close: () => Promise<void> }>
  /** Starts node `name` with these arguments, knowing the peer listeners `peers`. */
  start: (name: string, args: string[], peers: string[]) => Promise<NarswarmProcess>
  /** Realises the closure into the Nix store at `root` through `node` (default: nix-store --realise). */
  realise?: (node: NarswarmProcess, root: string) => Promise<void>
  /** Resolves once `node` knows `peers` (discovery); default: at once. */
  ready?: (node: NarswarmProcess, peers: NarswarmProcess[]) => Promise<void>
}

export interface SwarmScenarioResult {
  /** NAR bytes of the whole closure. */
  narBytes: number
  /** NAR bytes the upstream sent while A substituted. */
  upstreamForA: number
  /** NAR bytes the upstream sent while B and C substituted. */
  upstreamForBC: number
  /** Share of B's and C's NAR bytes that came from peers. */
  peerShare: number
  /** Paths valid in C′'s fresh store, substituted with the upstream and A down. */
  freshPaths: number
  /** The NarHash of every path in C′'s store matches the original's. */
  freshVerified: boolean
  nodes: Record<string, NarswarmProcess>
}

export async function realiseWith (nix: NixEnv, publicKey: string, top: string): Promise<(node: NarswarmProcess, root: string) => Promise<void>> {
  return async (node, root) => {
    await nix.run('nix-store', ['--store', `local?root=${root}`, '--realise', top,
      '--option', 'substituters', node.url, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'])
  }
}

export async function runSwarmScenario (init: SwarmScenarioInit): Promise<SwarmScenarioResult> {
  const { nix, closure } = init
  let narBytesSent = 0
  const onServed = (path: string, bytes: number): void => { if (path.startsWith('/nar/')) narBytesSent += bytes }
  const upstream = await (init.startUpstream ?? (async (dir, served) => await startCacheServer(dir, { onServed: served })))(init.cacheDir, onServed)
  const realise = init.realise ?? await realiseWith(nix, closure.publicKey, closure.top)
  const ready = init.ready ?? (async () => {})
  const args = ['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`]
  const nodes: Record<string, NarswarmProcess> = {}
  const narBytes = (JSON.parse(await nix.run('nix', ['path-info', '--json', '-r', closure.top])) as Array<{ narSize: number }>)
    .reduce((n, p) => n + p.narSize, 0)
  try {
    const a = nodes.A = await init.start('A', args, [])
    await realise(a, join(nix.dir, 'store-A'))
    const upstreamForA = narBytesSent

    const b = nodes.B = await init.start('B', args, [a.peerUrl!])
    const c = nodes.C = await init.start('C', args, [a.peerUrl!, b.peerUrl!])
    await ready(b, [a])
    await ready(c, [a, b])
    await Promise.all([realise(b, join(nix.dir, 'store-B')), realise(c, join(nix.dir, 'store-C'))])
    const upstreamForBC = narBytesSent - upstreamForA

    await upstream.close()
    await a.stop()
    await c.stop()
    const fresh = nodes["C'"] = await init.start("C'", args, [a.peerUrl!, b.peerUrl!])
    await ready(fresh, [b])
    const root = join(nix.dir, 'store-C-fresh')
    await realise(fresh, root)
    const summary = (json: string): string[] => (JSON.parse(json) as Array<{ path: string, narHash: string }>).map(p => `${p.path} ${p.narHash}`).sort()
    const original = summary(await nix.run('nix', ['path-info', '--json', '-r', closure.top]))
    const copied = summary(await nix.run('nix', ['path-info', '--store', `local?root=${root}`, '--json', '-r', closure.top]))
    return {
      narBytes,
      upstreamForA,
      upstreamForBC,
      peerShare: 1 - upstreamForBC / (2 * narBytes),
      freshPaths: copied.length,
      freshVerified: JSON.stringify(original) === JSON.stringify(copied),
      nodes
    }
  } catch (err) {
    await Promise.all(Object.values(nodes).map(async n => await n.stop().catch(() => null)))
    throw err
  } finally {
    await upstream.close().catch(() => {})
  }
}
