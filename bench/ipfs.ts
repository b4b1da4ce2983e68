/**
 * The IPFS backend's benchmark (`node bench/ipfs.ts`): two embedded IPFS nodes in two processes on
 * 127.0.0.1, against plain HTTP from the same machine.
 *
 *   speed    a NAR of IPFS_BENCH_MIB (200) MiB published by node A (which serves a trustless gateway
 *            over plain HTTP, `gateway-listen`), fetched by node B as CAR streams from that gateway,
 *            by fresh nodes as CAR streams over libp2p (`fetch-http=false`) and over bitswap only
 *            (`libp2p-gateway=false`) — each through the backend's `open`, every block stored and
 *            the NAR hashed as narswarm would — and, back to back, from a plain Node HTTP server
 *            over the same file: time to first byte and MiB/s.
 *   memory   with IPFS_BENCH_MEMORY_MIB (1024) MiB: node A's peak RSS while publishing, then while
 *            serving the NAR; the peak RSS of node B fetching it over plain HTTP, and of node B'
 *            fetching it over libp2p.
 *   start-up import of the IPFS modules + start of a node, and the size of the modules installed.
 *
 * Servers are pinned to CPU 0 and clients to CPU 1 when taskset exists. Every client first fetches a
 * different 16 MiB file the same way (so that its code is compiled, as in a narswarm that has been
 * running), and the measured fetch starts after a `sync`. Each process samples its own VmRSS every 50 ms. Everything runs in one temp dir, removed at the end. `--only speed|memory`
 * runs one part.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NixHash } from '../src/nix/hash.ts'
import { silentLogger } from '../src/log.ts'
import { CLIENT_CPU, SERVER_CPU, pinned } from './lib/procs.ts'
import { freePort } from '../test/helpers/net.ts'

const SELF = fileURLToPath(import.meta.url)
const MiB = 1 << 20
/** The NAR each fetcher reads first (a different one, so that nothing of the measured NAR is local). */
const WARM_MIB = 16

/** Peak VmRSS (bytes) of this process since the last reset, sampled every 50 ms. */
function rssSampler (): { peak: () => number, reset: () => void } {
  let peak = 0
  const sample = (): void => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    if (m !== null) peak = Math.max(peak, Number(m[1]) * 1024)
  }
  setInterval(sample, 50).unref()
  sample()
  return { peak: () => { sample(); return peak }, reset: () => { peak = 0; sample() } }
}

/**
 * Writes out what earlier steps left in the page cache, so that no measurement pays for the
 * writeback of the one before (all steps share one disk, and the kernel's flusher shares the CPUs).
 */
function settleDisk (): void {
  spawnSync('sync')
}

const send = (msg: object): void => { process.stdout.write(`${JSON.stringify(msg)}\n`) }

async function * fileChunks (file: string): AsyncGenerator<Uint8Array> {
  for await (const c of createReadStream(file, { highWaterMark: MiB })) yield c as Uint8Array
}

/** Child: node A. Publishes the file, reports, then serves until SIGTERM and reports again. */
async function seeder (dir: string, file: string, port: string, narHash: string, size: number): Promise<void> {
  const rss = rssSampler()
  const { plugin } = await import('../src/backend/ipfs/plugin.ts')
  const backend = await plugin.create(plugin.parse(new URL(`ipfs:?listen=/ip4/127.0.0.1/tcp/${port}&routing=none&gateway-listen=/ip4/127.0.0.1/tcp/0`)), { log: silentLogger(), stateDir: dir }) as import('../src/backend/ipfs/embedded.ts').EmbeddedIpfsBackend
  rss.reset()
  const t0 = performance.now()
  const locator = await backend.publish({ narHash: NixHash.parse(narHash), narSize: size, body: fileChunks(file) })
  const addMs = performance.now() - t0
  const addPeakRss = rss.peak()
  const warm = randomBytes(WARM_MIB * MiB)
  const warmLocator = await backend.publish({ narHash: NixHash.of('sha256', warm), narSize: warm.length, body: (async function * () { yield warm })() })
  send({ event: 'published', locator: locator.url, warmLocator: warmLocator.url, addMs, addPeakRss, multiaddr: backend.multiaddrs[0] })
  rss.reset()
  process.once('SIGTERM', () => {
    send({ event: 'served', servePeakRss: rss.peak() })
    void backend.close().then(() => process.exit(0))
  })
}

/** Child: node B. Times the module import and node start, then fetches the locator. */
async function fetcher (dir: string, locator: string, warmLocator: string, bootstrap: string, sha: string, options: string): Promise<void> {
  const t0 = performance.now()
  const { plugin } = await import('../src/backend/ipfs/plugin.ts')
  const init = plugin.parse(new URL(`ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none&${options}&bootstrap=${bootstrap}`))
  const { createEmbedded } = await import('../src/backend/ipfs/embedded.ts')
  const t1 = performance.now()
  const backend = await createEmbedded(init as import('../src/backend/ipfs/spec.ts').EmbeddedInit, dir, process.env.IPFS_BENCH_LOG === undefined ? silentLogger() : (await import('../src/log.ts')).createLogger(process.env.IPFS_BENCH_LOG as 'debug'))
  const t2 = performance.now()
  const rss = rssSampler()
  // Measured on an established connection and after a first fetch, as in a narswarm that has been
  // running: a node's peers are connected long before a request, and its code is compiled.
  await new Promise(resolve => setTimeout(resolve, 1000))
  const warm = await backend.open({ url: warmLocator, compression: 'none' })
  for await (const _ of warm!.body);
  settleDisk()
  rss.reset()
  const start = performance.now()
  const source = await backend.open({ url: locator, compression: 'none' })
  if (source === undefined) throw new Error('absent')
  const result = await consume(source.body, start, sha)
  send({ event: 'fetched', importMs: t1 - t0, startMs: t2 - t1, ...result, peakRss: rss.peak(), carBytes: backend.carBytes, networkBytes: backend.networkBytes })
  await backend.close()
}

/** Child: a plain HTTP client of the baseline server, measured the same way. */
async function httpFetcher (url: string, sha: string): Promise<void> {
  for await (const _ of (await fetch(`${url}warm`)).body!);
  settleDisk()
  const start = performance.now()
  const res = await fetch(url)
  if (res.status !== 200 || res.body === null) throw new Error(`HTTP ${res.status}`)
  send({ event: 'fetched', ...await consume(res.body as AsyncIterable<Uint8Array>, start, sha) })
}

async function consume (body: AsyncIterable<Uint8Array>, start: number, sha: string): Promise<{ ttfbMs: number, mibPerSec: number, bytes: number }> {
  const hash = createHash('sha256')
  let ttfb = -1
  let bytes = 0
  for await (const chunk of body) {
    if (ttfb < 0) ttfb = performance.now() - start
    hash.update(chunk)
    bytes += chunk.length
  }
  if (hash.digest('hex') !== sha) throw new Error('the fetched bytes do not match')
  return { ttfbMs: ttfb, mibPerSec: bytes / MiB / ((performance.now() - start) / 1000), bytes }
}

/** Child: the baseline, a plain Node HTTP server over the file. */
async function httpServer (file: string, port: string): Promise<void> {
  const warm = randomBytes(WARM_MIB * MiB)
  const server = createServer((req, res) => {
    res.writeHead(200)
    if (req.url === '/warm') res.end(warm)
    else createReadStream(file, { highWaterMark: MiB }).pipe(res)
  })
  server.listen(Number(port), '127.0.0.1')
  await once(server, 'listening')
  send({ event: 'listening' })
}

interface Child { proc: ChildProcess, next: (event: string) => Promise<any> }

function child (cpu: number, ...args: string[]): Child {
  const [cmd, argv] = pinned(cpu, process.execPath, ['--disable-warning=ExperimentalWarning', SELF, ...args])
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = createInterface({ input: proc.stdout! })
  const waiting: Array<{ event: string, resolve: (m: any) => void }> = []
  const seen: any[] = []
  lines.on('line', line => {
    const msg = JSON.parse(line) as { event: string }
    const w = waiting.findIndex(x => x.event === msg.event)
    if (w >= 0) waiting.splice(w, 1)[0]!.resolve(msg)
    else seen.push(msg)
  })
  const exited = new Promise<never>((_resolve, reject) => proc.once('exit', code => reject(new Error(`${args[0]} exited with ${code}`))))
  exited.catch(() => {})
  return {
    proc,
    next: async event => {
      const i = seen.findIndex(m => m.event === event)
      if (i >= 0) return seen.splice(i, 1)[0]
      return await Promise.race([new Promise(resolve => waiting.push({ event, resolve })), exited])
    }
  }
}

async function makeNar (file: string, mib: number): Promise<{ narHash: string, sha: string }> {
  const out = createWriteStream(file)
  const hash = createHash('sha256')
  for (let i = 0; i < mib; i++) {
    const block = randomBytes(MiB)
    hash.update(block)
    if (!out.write(block)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
  const digest = hash.digest()
  return { narHash: new NixHash('sha256', digest).toString(), sha: digest.toString('hex') }
}

async function run (mib: number, dir: string, withHttp: boolean): Promise<Record<string, number>> {
  const file = join(dir, `nar-${mib}`)
  process.stderr.write(`writing a ${mib} MiB NAR…\n`)
  const { narHash, sha } = await makeNar(file, mib)
  const portA = await freePort()
  const a = child(SERVER_CPU, 'seed', join(dir, `a-${mib}`), file, String(portA), narHash, String(mib * MiB))
  try {
    process.stderr.write('node A publishing…\n')
    const published = await a.next('published')
    process.stderr.write('node B fetching (CAR streams over plain HTTP)…\n')
    const got = await child(CLIENT_CPU, 'fetch', join(dir, `b-${mib}`), published.locator, published.warmLocator, published.multiaddr, sha, 'fetch-http=true').next('fetched')
    if (got.carBytes !== got.networkBytes) process.stderr.write(`note: ${got.networkBytes - got.carBytes} of ${got.networkBytes} bytes came over bitswap\n`)
    process.stderr.write('node B\' fetching (CAR streams over libp2p)…\n')
    const libp2p = await child(CLIENT_CPU, 'fetch', join(dir, `b1-${mib}`), published.locator, published.warmLocator, published.multiaddr, sha, 'fetch-http=false').next('fetched')
    let bitswap: any
    if (withHttp) {
      process.stderr.write('node B\'\' fetching over bitswap only…\n')
      bitswap = await child(CLIENT_CPU, 'fetch', join(dir, `b2-${mib}`), published.locator, published.warmLocator, published.multiaddr, sha, 'libp2p-gateway=false').next('fetched')
    }
    a.proc.kill('SIGTERM')
    const served = await a.next('served')
    const out: Record<string, number> = {
      mib, addMiBs: mib / (published.addMs / 1000), addPeakRssMiB: published.addPeakRss / MiB, servePeakRssMiB: served.servePeakRss / MiB,
      fetchPeakRssMiB: got.peakRss / MiB, ipfsTtfbMs: got.ttfbMs, ipfsMiBs: got.mibPerSec, importMs: got.importMs, startMs: got.startMs
    }
    Object.assign(out, { libp2pTtfbMs: libp2p.ttfbMs, libp2pMiBs: libp2p.mibPerSec, libp2pFetchPeakRssMiB: libp2p.peakRss / MiB })
    if (bitswap !== undefined) Object.assign(out, { bitswapTtfbMs: bitswap.ttfbMs, bitswapMiBs: bitswap.mibPerSec })
    if (withHttp) {
      const port = await freePort()
      const server = child(SERVER_CPU, 'http-server', file, String(port))
      await server.next('listening')
      const h = await child(CLIENT_CPU, 'http-fetch', `http://127.0.0.1:${port}/`, sha).next('fetched')
      server.proc.kill('SIGTERM')
      Object.assign(out, { httpTtfbMs: h.ttfbMs, httpMiBs: h.mibPerSec, throughputRatio: got.mibPerSec / h.mibPerSec, libp2pRatio: libp2p.mibPerSec / h.mibPerSec })
    }
    return out
  } finally {
    a.proc.kill('SIGTERM')
  }
}

function installSize (): number {
  const r = spawnSync('du', ['-sk', 'node_modules/helia', 'node_modules/@helia', 'node_modules/@libp2p', 'node_modules/libp2p', 'node_modules/kubo-rpc-client',
    'node_modules/ipfs-unixfs-importer', 'node_modules/ipfs-unixfs', 'node_modules/@ipld', 'node_modules/blockstore-fs', 'node_modules/datastore-fs', 'node_modules/rabin-wasm'], { encoding: 'utf8' })
  return r.stdout.trim().split('\n').reduce((s, l) => s + Number(l.split('\t')[0]), 0) / 1024
}

async function main (): Promise<void> {
  const [role, ...args] = process.argv.slice(2)
  if (role === 'seed') return await seeder(args[0]!, args[1]!, args[2]!, args[3]!, Number(args[4]))
  if (role === 'fetch') return await fetcher(args[0]!, args[1]!, args[2]!, args[3]!, args[4]!, args[5]!)
  if (role === 'http-server') return await httpServer(args[0]!, args[1]!)
  if (role === 'http-fetch') return await httpFetcher(args[0]!, args[1]!)
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-ipfs-bench-'))
  try {
    if (only === undefined || only === 'speed') {
      const r = await run(Number(process.env.IPFS_BENCH_MIB ?? 200), dir, true)
      console.log(JSON.stringify({ part: 'speed', ...round(r) }))
    }
    if (only === undefined || only === 'memory') {
      const r = await run(Number(process.env.IPFS_BENCH_MEMORY_MIB ?? 1024), dir, false)
      console.log(JSON.stringify({ part: 'memory', ...round(r) }))
    }
    console.log(JSON.stringify({ part: 'install', ipfsModulesMiB: Math.round(installSize()) }))
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

function round (r: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v * 100) / 100]))
}

await main()
