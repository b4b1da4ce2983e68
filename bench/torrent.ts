/**
 * The BitTorrent backend against plain HTTP (`node bench/torrent.ts`): time to first byte and MiB/s
 * of one big NAR (BENCH_NAR_MIB, 200 by default) fetched by a fresh narswarm from a second local
 * peer over BitTorrent, against the same fetch by a fresh narswarm from a plain HTTP cache, and a
 * plain curl of that cache for reference. Peer A is a `narswarm serve` seeding the NAR it
 * published (index at /narswarm/v1/); peer B is a fresh `narswarm serve` per repetition whose
 * only source is A's index and the swarm (upstream down). A tracker on 127.0.0.1 is the only
 * discovery; DHT, local discovery, peer exchange and uTP are off. Reported: medians over
 * BENCH_REPS (3) and the ratios BitTorrent ÷ HTTP, plus the peak RSS of seeder and fetcher.
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { makeEntry, writeSignedCache } from '../test/helpers/signed-cache.ts'
import { startCacheServer } from '../test/helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../test/helpers/narswarm.ts'
import { publishCache } from '../test/helpers/publish.ts'
import { startTracker } from '../test/helpers/torrent-tracker.ts'
import { curlDownload, fmt, machineBusy, median, MiB, table, type Download } from './lib/measure.ts'
import { procStatusKb } from './lib/narswarm.ts'
import { cleanup, freePort, installCleanupHandlers, intEnv, makeTempDir } from './lib/procs.ts'

const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const REPS = intEnv('BENCH_REPS', 3)
const t0 = performance.now()
const progress = (msg: string): void => { process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`) }

installCleanupHandlers()
const root = makeTempDir('narswarm-bench-torrent-')
const running: Array<{ stop: () => Promise<unknown> }> = []
try {
  const busy = await machineBusy()
  if (busy !== undefined && busy > 10) progress(`warning: the machine is ${fmt(busy)} % busy with other work; figures will be low and noisy`)

  progress(`writing a ${NAR_MIB} MiB NAR into an uncompressed signed cache`)
  const entry = makeEntry('bench-torrent', randomBytes(NAR_MIB * MiB))
  const cacheDir = join(root, 'cache')
  const { publicKey } = await writeSignedCache(cacheDir, [entry])
  const http = await startCacheServer(cacheDir)
  running.push({ stop: http.close })
  const tracker = await startTracker()
  running.push({ stop: tracker.close })
  const spec = `torrent:?dht=false&lsd=false&pex=false&utp=false&port=0&tracker=${encodeURIComponent(tracker.announce)}`
  const dead = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${publicKey}`
  const keys = ['--trusted-public-keys', publicKey]

  progress('peer A: publishing the NAR as a torrent, then seeding it')
  const stateA = join(root, 'peer-a')
  const started = performance.now()
  await publishCache({ cacheDir, publicKey, backend: spec, stateDir: stateA })
  const publishS = (performance.now() - started) / 1000
  const a = await startNarswarm(['--state-dir', stateA, '--backend', spec, '--upstream', dead, ...keys, '--log-level', 'info'])
  running.push(a)
  await a.waitForLog(l => l.msg === 'torrents resumed')

  const narUrl = (node: NarswarmProcess): string => `${node.url}/nar/${entry.narHash.toNix32()}.nar`
  async function fetchThrough (args: string[]): Promise<Download & { rssMiB: number }> {
    const node = await startNarswarm([...args, ...keys, '--log-level', 'info'])
    try {
      const res = await fetch(`${node.url}/${entry.hashPart}.narinfo`)
      if (res.status !== 200) throw new Error(`narinfo: HTTP ${res.status}`)
      await res.arrayBuffer()
      const d = await curlDownload(narUrl(node), entry.nar.length)
      return { ...d, rssMiB: (procStatusKb(node.child.pid!, 'VmHWM') ?? NaN) / 1024 }
    } finally { await node.stop() }
  }

  const torrent: Array<Download & { rssMiB: number }> = []
  const relay: Array<Download & { rssMiB: number }> = []
  const direct: Download[] = []
  for (let rep = 1; rep <= REPS; rep++) {
    progress(`repetition ${rep}/${REPS}: fresh peer B over BitTorrent`)
    torrent.push(await fetchThrough(['--mapper', `http+${a.url}/`, '--backend', spec, '--upstream', dead]))
    progress(`repetition ${rep}/${REPS}: fresh narswarm over plain HTTP`)
    relay.push(await fetchThrough(['--upstream', `${http.url}?trusted-public-keys=${publicKey}`]))
    progress(`repetition ${rep}/${REPS}: curl of the HTTP cache`)
    direct.push(await curlDownload(`${http.url}/nar/${entry.narHash.toNix32()}.nar`, entry.nar.length))
  }
  const seederRss = (procStatusKb(a.child.pid!, 'VmHWM') ?? NaN) / 1024
  const m = (xs: Array<Download>, k: keyof Download): number => median(xs.map(x => x[k]))
  const row = (name: string, xs: Download[], rss?: number): string[] =>
    [name, fmt(m(xs, 'ttfbMs'), 1), fmt(m(xs, 'mibPerSec'), 1), rss === undefined ? '' : fmt(rss)]
  console.log(`\nBitTorrent vs HTTP, one ${NAR_MIB} MiB NAR, medians of ${REPS} (narswarm publish, process start included: ${fmt(publishS, 1)} s)\n`)
  console.log(table([
    ['source', 'TTFB ms', 'MiB/s', 'peak RSS MiB'],
    row('narswarm B ← peer A (BitTorrent)', torrent, median(torrent.map(t => t.rssMiB))),
    row('narswarm ← HTTP cache', relay, median(relay.map(t => t.rssMiB))),
    row('curl ← HTTP cache', direct),
    ['peer A seeding', '', '', fmt(seederRss)]
  ]))
  console.log(`\nratios BitTorrent ÷ narswarm over HTTP: TTFB ${fmt(m(torrent, 'ttfbMs') / m(relay, 'ttfbMs'), 2)}×, ` +
    `MiB/s ${fmt(m(torrent, 'mibPerSec') / m(relay, 'mibPerSec'), 2)}×; ÷ curl: MiB/s ${fmt(m(torrent, 'mibPerSec') / m(direct, 'mibPerSec'), 2)}×`)
} finally {
  for (const r of running.reverse()) await r.stop().catch(() => {})
  await cleanup()
}
