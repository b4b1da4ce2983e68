/**
 * The cost of narswarm's routing layer (`npm run bench:routing`): a NAR fetched through narswarm
 * from an index (sqlite: mapper) and a backend, with the upstream down, against the same bytes
 * fetched directly from that backend — measured back to back in the same run, medians of
 * `BENCH_REPS` (3) repetitions, servers on CPU 0 and clients on CPU 1 when taskset exists.
 *
 *   big NAR      one `BENCH_NAR_MIB` (200) MiB NAR: MiB/s and time to first byte with curl,
 *                narswarm (mirror+http backend over two nginx) vs curl from nginx itself, and
 *                narswarm (file:// backend) vs the file backend's own stream read in this process
 *   small NARs   `BENCH_SMALL` (300) substitutions of 64 KiB NARs (narinfo + NAR, one after the
 *                other, keep-alive): narswarm with each backend vs nginx serving the same cache
 *   routing      narswarm with the index and a mirror vs narswarm relaying the upstream's own
 *                NAR URL (no index): what the routing layer adds on top of the verified relay
 *
 * narswarm looks the NarHash up in the index, races the backend's sources (one here), verifies
 * every byte and relays it; the direct fetch does none of that, so the ratio is the whole price of
 * routing and verification. Every answer is checked before anything is timed.
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { NarInfo } from '../src/nix/narinfo.ts'
import { generateSecretKey } from '../src/nix/signature.ts'
import { openBackend, openMapper } from '../src/registry.ts'
import { silentLogger } from '../src/log.ts'
import { makeEntry, writeSignedCache, type CacheEntry } from '../test/helpers/signed-cache.ts'
import { curlDownload, fmt, median, MiB, table, type Download } from './lib/measure.ts'
import { startNarswarm, type NarswarmServer } from './lib/narswarm.ts'
import { startNginx, type Nginx } from './lib/nginx.ts'
import { freePort, hasTaskset, intEnv, makeTempDir, runBench } from './lib/procs.ts'
import { readFile } from 'node:fs/promises'

const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const SMALL = intEnv('BENCH_SMALL', 300)
const REPS = intEnv('BENCH_REPS', 3)

const t0 = performance.now()
const progress = (msg: string): void => { process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`) }

interface Cache { dir: string, publicKey: string, big: CacheEntry, small: CacheEntry[], narinfos: NarInfo[] }

async function makeCache (dir: string): Promise<Cache> {
  const big = makeEntry('big-nar', randomBytes(NAR_MIB * MiB))
  const small = Array.from({ length: SMALL }, (_, i) => makeEntry(`small-${i}`, randomBytes(64 * 1024)))
  const { publicKey } = await writeSignedCache(dir, [big, ...small], generateSecretKey('bench-routing-1'))
  const narinfos = await Promise.all([big, ...small].map(async e => NarInfo.parse(await readFile(join(dir, `${e.hashPart}.narinfo`), 'utf8'))))
  return { dir, publicKey, big, small, narinfos }
}

/** An index where every NAR of the cache is at `locatorOf(narinfo)`, with its signed narinfo. */
async function writeIndex (file: string, cache: Cache, locatorOf: (n: NarInfo) => string): Promise<void> {
  const mapper = await openMapper(`sqlite://${file}`, { log: silentLogger(), stateDir: cache.dir })
  try {
    for (const n of cache.narinfos) await mapper.record!(n.narHash, { url: locatorOf(n), compression: n.compression, fileSize: n.fileSize }, { narInfo: n.toString() })
  } finally {
    await mapper.close?.()
  }
}

const agent = new Agent({ connections: 1, pipelining: 1 })

/** GET `url`, whole body hashed; checks status and optionally the sha256. */
async function get (url: string, wantHex?: string): Promise<Buffer> {
  const res = await request(url, { dispatcher: agent })
  const chunks: Buffer[] = []
  for await (const c of res.body) chunks.push(c as Buffer)
  const body = Buffer.concat(chunks)
  if (res.statusCode !== 200) throw new Error(`GET ${url}: HTTP ${res.statusCode} ${body.toString().slice(0, 200)}`)
  if (wantHex !== undefined && createHash('sha256').update(body).digest('hex') !== wantHex) throw new Error(`GET ${url}: wrong bytes`)
  return body
}

/** Substitutions per second: narinfo then NAR for every small entry, in sequence, like one Nix worker. */
async function substitutions (base: string, cache: Cache, check: boolean): Promise<number> {
  const started = performance.now()
  for (const e of cache.small) {
    const narinfo = NarInfo.parse((await get(`${base}/${e.hashPart}.narinfo`)).toString())
    await get(`${base}/${narinfo.url}`, check ? e.narHash.toBase16() : undefined)
  }
  return cache.small.length / ((performance.now() - started) / 1000)
}

/** The file backend's own stream of the big NAR, in this process: the direct fetch for file://. */
async function fileBackendRead (cache: Cache): Promise<Download> {
  const backend = await openBackend(`file://${cache.dir}`, { log: silentLogger(), stateDir: cache.dir })
  try {
    const n = cache.narinfos[0]!
    const started = performance.now()
    const source = await backend.open({ url: `file://${cache.dir}/${n.url}`, compression: 'none' })
    if (source === undefined) throw new Error('the file backend does not find the big NAR')
    let ttfb = 0
    let bytes = 0
    for await (const c of source.body) { if (bytes === 0) ttfb = performance.now() - started; bytes += c.length }
    if (bytes !== n.narSize) throw new Error(`file backend read ${bytes} bytes, expected ${n.narSize}`)
    return { mibPerSec: bytes / MiB / ((performance.now() - started) / 1000), ttfbMs: ttfb }
  } finally {
    await backend.close?.()
  }
}

async function main (): Promise<void> {
  const work = makeTempDir('narswarm-bench-routing-')
  chmodSync(work, 0o755)
  progress(`fixture: a signed cache with a ${NAR_MIB} MiB NAR and ${SMALL} NARs of 64 KiB in ${work}`)
  const cache = await makeCache(join(work, 'cache'))
  const nginx: Nginx[] = [await startNginx(cache.dir, join(work, 'nginx-a')), await startNginx(cache.dir, join(work, 'nginx-b'))]
  await writeIndex(join(work, 'mirror.sqlite'), cache, n => `${nginx[0]!.url}/${n.url}`)
  await writeIndex(join(work, 'file.sqlite'), cache, n => `file://${cache.dir}/${n.url}`)
  const dead = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${cache.publicKey}`
  const common = ['--trusted-public-keys', cache.publicKey]
  const ns: Record<'mirror' | 'file' | 'upstream', NarswarmServer> = {
    // No index: the NAR comes from the upstream's own URL, the relay narswarm had before routing.
    upstream: await startNarswarm(`${nginx[0]!.url}?trusted-public-keys=${cache.publicKey}`, join(work, 'state-upstream'), { args: common }),
    mirror: await startNarswarm(dead, join(work, 'state-mirror'), { args: [...common, '--mapper', `sqlite://${join(work, 'mirror.sqlite')}`, '--backend', `mirror+${nginx[0]!.url}/,${nginx[1]!.url}/`] }),
    file: await startNarswarm(dead, join(work, 'state-file'), { args: [...common, '--mapper', `sqlite://${join(work, 'file.sqlite')}`, '--backend', `file://${cache.dir}`] })
  }
  const bigHex = cache.big.narHash.toBase16()
  const bigNarinfo = cache.narinfos[0]!
  const narPathVia = async (base: string): Promise<string> => `${base}/${NarInfo.parse((await get(`${base}/${cache.big.hashPart}.narinfo`)).toString()).url}`
  const url = {
    nginx: `${nginx[0]!.url}/${bigNarinfo.url}`,
    mirror: await narPathVia(ns.mirror.url),
    file: await narPathVia(ns.file.url),
    upstream: await narPathVia(ns.upstream.url)
  }

  progress('checks: the big NAR and every small substitution through each server (also the warm-up)')
  for (const u of Object.values(url)) await get(u, bigHex)
  for (const base of [nginx[0]!.url, ns.mirror.url, ns.file.url, ns.upstream.url]) await substitutions(base, cache, true)

  const big: Record<'nginx' | 'mirror' | 'file' | 'fileBackend' | 'upstream', Download[]> = { nginx: [], mirror: [], file: [], fileBackend: [], upstream: [] }
  const small: Record<'nginx' | 'mirror' | 'file' | 'upstream', number[]> = { nginx: [], mirror: [], file: [], upstream: [] }
  for (let rep = 0; rep < REPS; rep++) {
    big.nginx.push(await curlDownload(url.nginx, cache.big.nar.length))
    big.mirror.push(await curlDownload(url.mirror, cache.big.nar.length))
    big.fileBackend.push(await fileBackendRead(cache))
    big.file.push(await curlDownload(url.file, cache.big.nar.length))
    big.upstream.push(await curlDownload(url.upstream, cache.big.nar.length))
    for (const who of ['nginx', 'mirror', 'file', 'upstream'] as const) {
      small[who].push(await substitutions(who === 'nginx' ? nginx[0]!.url : ns[who].url, cache, false))
    }
    progress(`rep ${rep + 1}/${REPS}: big MiB/s nginx ${fmt(big.nginx.at(-1)!.mibPerSec)}, via mirror ${fmt(big.mirror.at(-1)!.mibPerSec)}, ` +
      `file backend ${fmt(big.fileBackend.at(-1)!.mibPerSec)}, via file ${fmt(big.file.at(-1)!.mibPerSec)}; ` +
      `via upstream ${fmt(big.upstream.at(-1)!.mibPerSec)}; substitutions/s nginx ${fmt(small.nginx.at(-1)!)}, mirror ${fmt(small.mirror.at(-1)!)}, ` +
      `file ${fmt(small.file.at(-1)!)}, upstream ${fmt(small.upstream.at(-1)!)}`)
  }

  const ratio = (a: number[], b: number[]): number => median(a.map((x, i) => x / b[i]!))
  const mibs = (k: keyof typeof big): number[] => big[k].map(d => d.mibPerSec)
  const ttfb = (k: keyof typeof big): number[] => big[k].map(d => d.ttfbMs)
  const row = (name: string, a: number[], b: number[], digits = 0): string[] => [name, fmt(median(a), digits), fmt(median(b), digits), fmt(ratio(a, b), 2)]
  console.log(`\nnarswarm routing bench — ${new Date().toISOString()} — node ${process.version}, ${hasTaskset() ? 'servers on CPU 0, clients on CPU 1' : 'unpinned'}`)
  console.log(`${REPS} repetitions, medians; ratio = median of per-repetition ratios; "via mirror/file": upstream down, NARs only through index + backend; "via upstream": no index, the upstream's NAR URL\n`)
  console.log(table([
    ['measure', 'narswarm', 'direct', 'ratio'],
    row(`${NAR_MIB} MiB NAR MiB/s: via mirror+http / nginx`, mibs('mirror'), mibs('nginx')),
    row('  time to first byte ms', ttfb('mirror'), ttfb('nginx'), 2),
    row(`${NAR_MIB} MiB NAR MiB/s: via file:// / file backend read`, mibs('file'), mibs('fileBackend')),
    row('  time to first byte ms', ttfb('file'), ttfb('fileBackend'), 2),
    row('64 KiB substitutions/s: via mirror+http / nginx', small.mirror, small.nginx),
    row('64 KiB substitutions/s: via file:// / nginx', small.file, small.nginx),
    ['routing alone (index + backend vs upstream URL, both verified)', '', '', ''],
    row(`  ${NAR_MIB} MiB NAR MiB/s: via mirror+http / via upstream`, mibs('mirror'), mibs('upstream')),
    row('  time to first byte ms', ttfb('mirror'), ttfb('upstream'), 2),
    row('  64 KiB substitutions/s: via mirror+http / via upstream', small.mirror, small.upstream)
  ]))
  progress('done')
}

await runBench(main, async () => await agent.close())
