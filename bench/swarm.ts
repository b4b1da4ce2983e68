/**
 * The LAN swarm against plain HTTP, on 127.0.0.1 (`node bench/swarm.ts`):
 *
 *   1. A big NAR (BENCH_NAR_MIB, default 200 MiB; BENCH_CONTENT `usr`, the default: files of
 *      /usr as a real NAR holds them, which compress about 3:1; `random`: nothing compresses or
 *      repeats, every byte crosses the wire as it is) fetched by a fresh narswarm node from one peer
 *      that holds it, as Nix sees it (curl on the node's NAR URL: the node fetches the chunks,
 *      verifies the whole NAR, then renders it), against the same file straight from nginx, and
 *      through a narswarm node from nginx as its upstream (which also stores every chunk).
 *   2. The same from three peers at once.
 *   3. Time to first byte of a small NAR (64 KiB) from a peer, as Nix sees it (narinfo fetched
 *      first), median over BENCH_SMALL NARs.
 *   4. Over a LAN link (BENCH_LAN_MBIT, default 1000 Mbit/s; bench/lib/lan-link.ts): nginx and a
 *      seed on a host across the link, the fetching node here; the big NAR straight from nginx,
 *      through the node from nginx as its upstream, and through the node from the seed. Needs
 *      root (network namespaces) and `tc`; skipped with the reason otherwise.
 *   5. With the real Nix, when installed: the three-node run of test/helpers/swarm.ts (A from the
 *      upstream, then B and C at once with the upstream up): share of NAR bytes from peers.
 *
 * Every narinfo is signed with a key made here (peers share only what a trusted key signed).
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, createWriteStream, mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import { startNginx } from './lib/nginx.ts'
import { usrNar } from './lib/usr-nar.ts'
import { createLinkedHost, linkUnavailable } from './lib/lan-link.ts'
import { curlDownload, fmt, median, MiB, table } from './lib/measure.ts'
import { intEnv, makeTempDir, runBench } from './lib/procs.ts'
import { NarInfo } from '../src/nix/narinfo.ts'
import { NixHash } from '../src/nix/hash.ts'
import { writeNar } from '../src/nix/nar/writer.ts'
import { generateSecretKey, signNarInfo } from '../src/nix/signature.ts'
import { makeStorePath } from '../src/nix/store-path.ts'
import { startNarswarm as startNode, type NarswarmProcess } from '../test/helpers/narswarm.ts'
import { makeNixEnv, nixVersion } from '../test/helpers/nix.ts'
import { buildWideClosure, copyTo } from '../test/helpers/closure.ts'
import { runSwarmScenario } from '../test/helpers/swarm.ts'

const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const SMALL = intEnv('BENCH_SMALL', 9)
const LAN_MBIT = intEnv('BENCH_LAN_MBIT', 1000)
const CONTENT = process.env.BENCH_CONTENT ?? 'usr'
if (CONTENT !== 'usr' && CONTENT !== 'random') throw new Error(`BENCH_CONTENT is usr or random, not ${CONTENT}`)
/** A directory: CPU profiles of the nodes that fetch from peers go there. */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR

/**
 * Waits until `node` has stored the NAR it just served. A node that relayed the NAR from its
 * upstream chunks, compresses and writes it after the last byte went out: on a machine of two
 * cores, that work would otherwise run into the next measurement (it slowed a fill from peers by
 * up to a fifth).
 */
async function stored (node: NarswarmProcess): Promise<void> {
  await node.waitForLog(l => l.msg === 'NAR committed to the store' || l.msg === 'NAR filled from peers', 120_000)
}

/** NAR bytes a node got from its peers, as it reports them. */
async function servedByPeers (node: NarswarmProcess): Promise<number> {
  const status = await (await fetch(`${node.url}/narswarm/peers`)).json() as { peers: Array<{ served: { bytes: number } }> }
  return status.peers.reduce((n, p) => n + p.served.bytes, 0)
}

async function main (): Promise<void> {
  const root = makeTempDir('narswarm-bench-swarm-')
  chmodSync(root, 0o755) // nginx's worker may run as another user (nobody, www-data) when started as root
  const plain = join(root, 'plain')
  mkdirSync(join(plain, 'nar'), { recursive: true })
  writeFileSync(join(plain, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n')
  const key = generateSecretKey('bench-swarm-1')
  const signed = (narInfo: NarInfo): string => signNarInfo(narInfo, key.secret).toString()
  const publish = async (name: string, contents: AsyncIterable<Uint8Array>, size: number): Promise<{ hashPart: string, narHash: string, narSize: number }> => {
    const tmp = join(root, 'nar.tmp')
    const hash = createHash('sha256')
    let narSize = 0
    const out = createWriteStream(tmp)
    for await (const piece of writeNar([{ type: 'file', depth: 0, name: '', size, contents }])) {
      hash.update(piece)
      narSize += piece.length
      if (!out.write(piece)) await once(out, 'drain')
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => err == null ? resolve() : reject(err)))
    const narHash = new NixHash('sha256', new Uint8Array(hash.digest()))
    renameSync(tmp, join(plain, 'nar', `${narHash.toNix32()}.nar`))
    const storePath = makeStorePath('output:out', NixHash.of('sha256', randomBytes(32)), name)
    writeFileSync(join(plain, `${storePath.slice(11, 43)}.narinfo`), signed(NarInfo.build({ storePath, url: `nar/${narHash.toNix32()}.nar`, compression: 'none', narHash, narSize, references: [] })))
    return { hashPart: storePath.slice(11, 43), narHash: narHash.toNix32(), narSize }
  }
  const usr = CONTENT === 'usr' ? await usrNar(NAR_MIB * MiB) : undefined
  const bigNar = usr !== undefined
    ? await publish('bench-big', (async function * () { yield usr })(), usr.length)
    : await publish('bench-big', (async function * () {
      for (let left = NAR_MIB * MiB; left > 0; left -= MiB) yield randomBytes(Math.min(MiB, left))
    })(), NAR_MIB * MiB)
  const contentNote = usr !== undefined ? `files of /usr, ${fmt(usr.length / MiB, 1)} MiB` : 'random contents'
  const small = []
  for (let i = 0; i < SMALL; i++) small.push(await publish(`small-${i}`, (async function * () { yield randomBytes(64 << 10) })(), 64 << 10))
  const nginx = await startNginx(plain, join(root, 'nginx'))
  const upstream = (server: { url: string }): string[] => ['--upstream', `${server.url}?trusted-public-keys=${key.public}`]
  const nodes: NarswarmProcess[] = []
  const start = async (args: string[], opts: { env?: NodeJS.ProcessEnv, wrap?: string[], upstream?: { url: string } } = {}): Promise<NarswarmProcess> => {
    const node = await startNode([...upstream(opts.upstream ?? nginx), ...args], opts)
    nodes.push(node)
    return node
  }
  const narUrl = (node: NarswarmProcess, narHash: string): string => `${node.url}/nar/${narHash}.nar`
  const size = bigNar.narSize
  try {
    const direct = await curlDownload(`${nginx.url}/nar/${bigNar.narHash}.nar`, size)

    // The seeds: the first from the upstream, the others from it.
    const seeds = [await start([])]
    await fetch(`${seeds[0]!.url}/${bigNar.hashPart}.narinfo`)
    const viaUpstream = await curlDownload(narUrl(seeds[0]!, bigNar.narHash), size)
    await stored(seeds[0]!)
    for (const s of small) {
      await fetch(`${seeds[0]!.url}/${s.hashPart}.narinfo`)
      await curlDownload(narUrl(seeds[0]!, s.narHash), s.narSize)
    }
    for (let i = 1; i < 3; i++) {
      const seed = await start(['--peer', seeds[0]!.peerUrl!])
      await fetch(`${seed.url}/${bigNar.hashPart}.narinfo`)
      await curlDownload(narUrl(seed, bigNar.narHash), size)
      await stored(seed)
      seeds.push(seed)
    }

    const fromPeers = async (peers: NarswarmProcess[]): Promise<{ mibPerSec: number, fillMs: number, peerBytes: number }> => {
      const node = await start(peers.flatMap(p => ['--peer', p.peerUrl!]), PROFILE_DIR === undefined ? {} : { env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${PROFILE_DIR}` } })
      await fetch(`${node.url}/${bigNar.hashPart}.narinfo`)
      const d = await curlDownload(narUrl(node, bigNar.narHash), size)
      const fill = await node.waitForLog(l => l.msg === 'NAR filled from peers')
      return { mibPerSec: d.mibPerSec, fillMs: fill.ms as number, peerBytes: await servedByPeers(node) }
    }
    const one = await fromPeers(seeds.slice(0, 1))
    const three = await fromPeers(seeds)

    const client = await start(['--peer', seeds[0]!.peerUrl!])
    const ttfb: number[] = []
    for (const s of small) {
      await fetch(`${client.url}/${s.hashPart}.narinfo`)
      ttfb.push((await curlDownload(narUrl(client, s.narHash), s.narSize)).ttfbMs)
    }

    process.stdout.write(`\nLAN swarm on 127.0.0.1 — ${NAR_MIB} MiB NAR (${contentNote}), nginx ${nginx.version}\n\n`)
    process.stdout.write(table([
      ['what', 'MiB/s', 'vs nginx', 'fill (ms)', 'bytes from peers'],
      ['nginx, straight HTTP', fmt(direct.mibPerSec), '1.00×', '', ''],
      ['narswarm, from the upstream (nginx)', fmt(viaUpstream.mibPerSec), `${fmt(viaUpstream.mibPerSec / direct.mibPerSec, 2)}×`, '', '0 %'],
      ['narswarm, from 1 peer', fmt(one.mibPerSec), `${fmt(one.mibPerSec / direct.mibPerSec, 2)}×`, fmt(one.fillMs), `${fmt(100 * one.peerBytes / size, 1)} %`],
      ['narswarm, from 3 peers', fmt(three.mibPerSec), `${fmt(three.mibPerSec / direct.mibPerSec, 2)}×`, fmt(three.fillMs), `${fmt(100 * three.peerBytes / size, 1)} %`]
    ]))
    process.stdout.write(`\ntime to first byte, 64 KiB NAR from a peer: median ${fmt(median(ttfb), 1)} ms (min ${fmt(Math.min(...ttfb), 1)}, max ${fmt(Math.max(...ttfb), 1)}, n=${ttfb.length})\n`)
  } finally {
    await Promise.all(nodes.splice(0).map(async n => await n.stop()))
    await nginx.stop()
  }

  const why = linkUnavailable()
  if (why !== undefined) {
    process.stdout.write(`\nover a LAN link: skipped (${why})\n`)
  } else {
    const link = createLinkedHost(LAN_MBIT)
    try {
      // nginx and the seed on the far host; the fetching node and curl here, as Nix would be.
      const far = await startNginx(plain, join(root, 'nginx-far'), { host: link.address, wrap: link.wrap })
      try {
        const seed = await start(['--listen', `${link.address}:0`, '--peer-listen', `${link.address}:0`], { wrap: link.wrap, upstream: far })
        await fetch(`${seed.url}/${bigNar.hashPart}.narinfo`)
        await curlDownload(narUrl(seed, bigNar.narHash), size)
        await stored(seed)
        const direct = await curlDownload(`${far.url}/nar/${bigNar.narHash}.nar`, size)
        const relay = await start([], { upstream: far })
        await fetch(`${relay.url}/${bigNar.hashPart}.narinfo`)
        const viaUpstream = await curlDownload(narUrl(relay, bigNar.narHash), size)
        await stored(relay)
        const node = await start(['--peer', seed.peerUrl!], { upstream: far })
        await fetch(`${node.url}/${bigNar.hashPart}.narinfo`)
        const fromPeer = await curlDownload(narUrl(node, bigNar.narHash), size)
        const fill = await node.waitForLog(l => l.msg === 'NAR filled from peers')
        const peerBytes = await servedByPeers(node)
        process.stdout.write(`\nOver a ${LAN_MBIT} Mbit/s link (tc tbf), ${NAR_MIB} MiB NAR (${contentNote}), nginx and the seed across it\n\n`)
        process.stdout.write(table([
          ['what', 'MiB/s', 'vs nginx', 'fill (ms)', 'bytes from peers'],
          ['nginx, straight HTTP', fmt(direct.mibPerSec), '1.00×', '', ''],
          ['narswarm, from the upstream (nginx)', fmt(viaUpstream.mibPerSec), `${fmt(viaUpstream.mibPerSec / direct.mibPerSec, 2)}×`, '', '0 %'],
          ['narswarm, from 1 peer', fmt(fromPeer.mibPerSec), `${fmt(fromPeer.mibPerSec / direct.mibPerSec, 2)}×`, fmt(fill.ms as number), `${fmt(100 * peerBytes / size, 1)} %`]
        ]))
      } finally {
        await Promise.all(nodes.splice(0).map(async n => await n.stop()))
        await far.stop()
      }
    } finally {
      link.close()
    }
  }

  if (process.env.BENCH_SWARM_NIX === '0') return
  if (nixVersion() === false) {
    process.stdout.write('\nthree-node share: skipped (the Nix client is not installed)\n')
    return
  }
  const nix = await makeNixEnv()
  try {
    const closure = await buildWideClosure(nix, 110)
    const cacheDir = join(nix.dir, 'cache')
    await copyTo(nix, closure, cacheDir, 'none')
    const result = await runSwarmScenario({
      nix, closure, cacheDir,
      start: async (_name, args, peers) => await startNode([...args, ...peers.flatMap(p => ['--peer', p])])
    })
    await Promise.all(Object.values(result.nodes).map(async n => await n.stop()))
    process.stdout.write(`\nthree nodes, ${closure.paths.length} paths, ${fmt(result.narBytes / MiB, 1)} MiB of NARs: ` +
      `B and C got ${fmt(100 * result.peerShare, 1)} % of their NAR bytes from peers; ` +
      `a fresh node got ${result.freshPaths} of ${closure.paths.length} paths from B with the upstream and A down\n`)
  } finally {
    await nix.cleanup()
  }
}

await runBench(main)
