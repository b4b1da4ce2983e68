/**
 * narswarm's benchmark (`npm run bench`): narswarm against nginx serving the same binary cache, and
 * narswarm's verified NAR relay against the sha256 ceiling of this machine, every pair measured back
 * to back in the same run, `BENCH_REPS` (3) repetitions, medians reported. Servers (nginx, narswarm,
 * the sha256 child) are pinned to CPU 0 and clients (wrk, curl) to CPU 1 when taskset exists.
 *
 *   narinfo req/s   wrk -t1 -c32 / -c1 cycling through N narinfo URLs; narswarm's cache warmed first
 *   NAR MiB/s       curl of one uncompressed NAR: nginx (sendfile) vs through narswarm (relay+verify)
 *   vs sha256       narswarm relay MiB/s ÷ node sha256 MiB/s over the same file; also from a zstd upstream
 *   peak RSS        narswarm's VmHWM during the NAR relays
 *
 * Before timing anything it checks that every server returns the right bytes. `--profile` adds a
 * CPU profile of narswarm (narinfo hits under wrk -c32, then NAR relays) and prints its top functions.
 * Settings (environment): BENCH_NARINFOS (2000), BENCH_NAR_MIB (200), BENCH_DURATION (5 s),
 * BENCH_REPS (3). See bench/README.md for what each row means and the targets.
 */
import { spawnSync } from 'node:child_process'
import { chmodSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { NarInfo } from '../src/nix/narinfo.ts'
import { makeFixture, type Fixture } from './lib/fixture.ts'
import { curlDownload, fetchDigest, fmt, machineBusy, median, MiB, sha256Ceiling, table, type Download } from './lib/measure.ts'
import { startBaseline, startNarswarm, procStatusKb, type NarswarmServer } from './lib/narswarm.ts'
import { startNginx, type Nginx } from './lib/nginx.ts'
import { newestProfile, summarizeProfile, type ProfileSummary } from './lib/profile.ts'
import { hasTaskset, intEnv, makeTempDir, runBench } from './lib/procs.ts'
import { runWrk, writeWrkScript, type WrkResult } from './lib/wrk.ts'

const NARINFOS = intEnv('BENCH_NARINFOS', 2000)
const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const DURATION = intEnv('BENCH_DURATION', 5)
const REPS = intEnv('BENCH_REPS', 3)
const PROFILE = process.argv.includes('--profile')

const TARGET = { narinfo: 0.85, nar: 0.45, relayVsSha: 0.8 }

const t0 = performance.now()
const progress = (msg: string): void => {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`)
}

function requireTools (): void {
  const missing = ['wrk', 'curl', 'zstd'].filter(t => spawnSync(t, ['--version'], { stdio: 'ignore' }).error !== undefined)
  if (missing.length > 0) throw new Error(`missing tools: ${missing.join(', ')} (apt-get install ${missing.join(' ')})`)
}

/** GETs every narinfo once through narswarm (fills its cache) and checks each answer against the file. */
async function warmAndCheck (ns: NarswarmServer, fx: Fixture): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < fx.hashParts.length) {
      const h = fx.hashParts[next++]!
      const res = await fetch(`${ns.url}/${h}.narinfo`)
      const body = await res.text()
      if (res.status !== 200) throw new Error(`narswarm answered ${res.status} for ${h}.narinfo: ${body}`)
      const got = NarInfo.parse(body)
      const want = NarInfo.parse(fx.texts.get(h)!)
      if (got.storePath !== want.storePath || !got.narHash.equals(want.narHash) || got.narSize !== want.narSize ||
        got.url !== `nar/${want.narHash.toNix32()}.nar` || got.sigs.join() !== want.sigs.join() || got.references.join() !== want.references.join()) {
        throw new Error(`narswarm's ${h}.narinfo does not match the upstream's:\n${body}\n---\n${fx.texts.get(h)!}`)
      }
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
}

async function checkNarinfoFromNginx (nginx: Nginx, fx: Fixture): Promise<void> {
  const h = fx.hashParts[0]!
  const res = await fetch(`${nginx.url}/plain/${h}.narinfo`)
  const text = await res.text()
  if (res.status !== 200 || text !== fx.texts.get(h)) throw new Error(`nginx does not serve ${h}.narinfo as written (${res.status})`)
}

/** The big NAR's bytes through `url` must hash to its NarHash. */
async function checkNar (url: string, fx: Fixture, what: string): Promise<void> {
  const got = await fetchDigest(url)
  if (got.status !== 200 || got.bytes !== fx.big.narSize || got.hex !== fx.big.narHashHex) {
    throw new Error(`${what}: HTTP ${got.status}, ${got.bytes} bytes, sha256 ${got.hex}; expected 200, ${fx.big.narSize} bytes, ${fx.big.narHashHex}`)
  }
}

async function primeBigNarInfo (ns: NarswarmServer, fx: Fixture): Promise<void> {
  const res = await fetch(`${ns.url}/${fx.big.hashPart}.narinfo`)
  const text = await res.text()
  if (res.status !== 200) throw new Error(`narswarm answered ${res.status} for the big NAR's narinfo`)
  if (!text.includes(`URL: nar/${fx.big.narHash}.nar\n`)) throw new Error(`narswarm's narinfo for the big NAR does not point at nar/${fx.big.narHash}.nar:\n${text}`)
}

/** Per-repetition results of several servers measured back to back. */
type Series<K extends string, T> = Record<K, T[]>

async function profileRun (fx: Fixture, nginx: Nginx, work: string, nsScript: string): Promise<{ narinfo: ProfileSummary, nar: ProfileSummary }> {
  const summarize = (dir: string, windowMs: number): ProfileSummary => {
    const file = newestProfile(dir)
    if (file === undefined) throw new Error(`no .cpuprofile written in ${dir}`)
    return summarizeProfile(file, { windowMs })
  }
  const dirA = makeTempDir('narswarm-prof-')
  progress('profile: narswarm --cpu-prof, narinfo hits (wrk -c32)')
  const a = await startNarswarm(`${nginx.url}/plain?require-sigs=false`, join(work, 'state-prof-a'), { cpuProfDir: dirA })
  await warmAndCheck(a, fx)
  await runWrk(a.url, nsScript, 32, 2)
  const r = await runWrk(a.url, nsScript, 32, DURATION)
  await a.stop()
  progress(`profile: ${fmt(r.rps)} req/s under the profiler`)
  const dirB = makeTempDir('narswarm-prof-')
  progress('profile: narswarm --cpu-prof, NAR relays')
  const b = await startNarswarm(`${nginx.url}/plain?require-sigs=false`, join(work, 'state-prof-b'), { cpuProfDir: dirB })
  await primeBigNarInfo(b, fx)
  await curlDownload(`${b.url}/nar/${fx.big.narHash}.nar`, fx.big.narSize)
  const started = performance.now()
  for (let i = 0; i < 3; i++) await curlDownload(`${b.url}/nar/${fx.big.narHash}.nar`, fx.big.narSize)
  const relayMs = performance.now() - started
  await b.stop()
  // The measured phase is the profile's tail; the 2 s wrk warm-up and the first relay are left out.
  return { narinfo: summarize(dirA, DURATION * 1000 + 300), nar: summarize(dirB, relayMs + 300) }
}

function printProfile (title: string, p: ProfileSummary): void {
  console.log(`\n${title}: ${fmt(p.totalMs)} ms sampled, idle ${fmt(p.idlePct, 1)} %`)
  console.log(table([['self time', 'ms', '%'], ...p.self.slice(0, 18).map(l => [l.name, fmt(l.ms), fmt(l.pct, 1)])]))
  console.log('')
  console.log(table([['inclusive time', 'ms', '%'], ...p.inclusive.slice(0, 22).map(l => [l.name, fmt(l.ms), fmt(l.pct, 1)])]))
}

/** Median of per-repetition ratios a[i]/b[i]. */
function ratio (a: readonly number[], b: readonly number[]): number {
  return median(a.map((x, i) => x / b[i]!))
}

async function main (): Promise<void> {
  requireTools()
  const work = makeTempDir('narswarm-bench-')
  chmodSync(work, 0o755) // nginx's worker may run as another user (nobody, www-data) when started as root
  progress(`fixture: ${NARINFOS} narinfos and a ${NAR_MIB} MiB NAR (+ zstd copy) in ${work}`)
  const fx = await makeFixture(join(work, 'cache'), { narInfos: NARINFOS, narMiB: NAR_MIB })

  const nginx = await startNginx(join(work, 'cache'), join(work, 'nginx'))
  // Three narswarm processes: narinfo hits, NAR relays and NAR relays from the zstd cache, so each
  // peak RSS belongs to one workload. Two minimal Node servers as the yardstick of Node itself.
  const ns = await startNarswarm(`${nginx.url}/plain?require-sigs=false`, join(work, 'state-narinfo'))
  const nsNar = await startNarswarm(`${nginx.url}/plain?require-sigs=false`, join(work, 'state-nar'))
  const nsZstd = await startNarswarm(`${nginx.url}/zstd?require-sigs=false`, join(work, 'state-zstd'))
  const nodeInfo = await startBaseline('narinfo', join(work, 'cache', 'plain'))
  const nodeRelay = await startBaseline('relay', `${nginx.url}/plain`)
  progress(`nginx ${nginx.url}, narswarm ${ns.url} (narinfo), ${nsNar.url} (NAR), ${nsZstd.url} (NAR from zstd)`)

  progress('checks: narinfo bytes from nginx; every narinfo through narswarm (warms its cache); NAR sha256 through each server')
  await checkNarinfoFromNginx(nginx, fx)
  await warmAndCheck(ns, fx)
  await primeBigNarInfo(nsNar, fx)
  await primeBigNarInfo(nsZstd, fx)
  const rssNarIdle = procStatusKb(nsNar.pid, 'VmRSS')
  const narPath = `/nar/${fx.big.narHash}.nar`
  const narUrl = {
    nginx: `${nginx.url}/plain${narPath}`,
    narswarm: `${nsNar.url}${narPath}`,
    zstd: `${nsZstd.url}${narPath}`,
    node: `${nodeRelay.url}${narPath}`
  }
  await checkNar(narUrl.nginx, fx, 'nginx NAR')
  await checkNar(narUrl.narswarm, fx, 'narswarm NAR relay')
  await checkNar(narUrl.zstd, fx, 'narswarm NAR relay from zstd')
  await checkNar(narUrl.node, fx, 'minimal node relay')

  const scripts = { nginx: join(work, 'nginx.lua'), narswarm: join(work, 'narswarm.lua') }
  writeWrkScript(scripts.nginx, fx.hashParts.map(h => `/plain/${h}.narinfo`))
  writeWrkScript(scripts.narswarm, fx.hashParts.map(h => `/${h}.narinfo`))
  const wrkTargets = {
    nginx: { url: nginx.url, script: scripts.nginx },
    narswarm: { url: ns.url, script: scripts.narswarm },
    node: { url: nodeInfo.url, script: scripts.narswarm }
  }
  type Who = keyof typeof wrkTargets
  const order: Who[] = ['nginx', 'narswarm', 'node']

  progress('warm-up: wrk 2 s on each server, one NAR download from each (not recorded)')
  for (const who of order) await runWrk(wrkTargets[who].url, wrkTargets[who].script, 32, 2)
  for (const url of Object.values(narUrl)) await curlDownload(url, fx.big.narSize)
  const rssAfterWarmup = procStatusKb(ns.pid, 'VmRSS')
  const busyBefore = await machineBusy(1000)
  if (busyBefore !== undefined && busyBefore > 10) progress(`WARNING: the machine is ${fmt(busyBefore)} % busy with other work while idle here; figures will be noisy`)

  // 1. narinfo requests/s: the servers back to back, order reversed every other repetition.
  const wrk: Record<32 | 1, Series<Who, WrkResult>> = {
    32: { nginx: [], narswarm: [], node: [] },
    1: { nginx: [], narswarm: [], node: [] }
  }
  for (let rep = 0; rep < REPS; rep++) {
    for (const c of [32, 1] as const) {
      for (const who of rep % 2 === 0 ? order : [...order].reverse()) {
        const r = await runWrk(wrkTargets[who].url, wrkTargets[who].script, c, DURATION)
        wrk[c][who].push(r)
        progress(`narinfo rep ${rep + 1}/${REPS} -c${c} ${who.padEnd(8)}: ${fmt(r.rps)} req/s, mean ${fmt(r.meanMs, 3)} ms, p99 ${fmt(r.p99Ms, 2)} ms` +
          `${r.badStatus + r.socketErrors > 0 ? `, ${r.badStatus} bad status, ${r.socketErrors} socket errors` : ''}`)
      }
    }
  }
  const rssAfterNarinfo = procStatusKb(ns.pid, 'VmRSS')
  const hwmAfterNarinfo = procStatusKb(ns.pid, 'VmHWM')
  const hwmNodeInfo = procStatusKb(nodeInfo.pid, 'VmHWM')

  // 2–4. NAR MiB/s: nginx, narswarm relay, minimal node relay, the sha256 ceiling, relay from zstd.
  const nar: Series<'nginx' | 'narswarm' | 'node' | 'zstd', Download> = { nginx: [], narswarm: [], node: [], zstd: [] }
  const sha: number[] = []
  for (let rep = 0; rep < REPS; rep++) {
    nar.nginx.push(await curlDownload(narUrl.nginx, fx.big.narSize))
    nar.narswarm.push(await curlDownload(narUrl.narswarm, fx.big.narSize))
    sha.push(await sha256Ceiling(fx.big.file, fx.big.narHashHex))
    nar.node.push(await curlDownload(narUrl.node, fx.big.narSize))
    nar.zstd.push(await curlDownload(narUrl.zstd, fx.big.narSize))
    progress(`NAR rep ${rep + 1}/${REPS}: nginx ${fmt(nar.nginx.at(-1)!.mibPerSec)}, narswarm ${fmt(nar.narswarm.at(-1)!.mibPerSec)}, ` +
      `sha256 ${fmt(sha.at(-1)!)}, node relay ${fmt(nar.node.at(-1)!.mibPerSec)}, narswarm from zstd ${fmt(nar.zstd.at(-1)!.mibPerSec)} MiB/s`)
  }
  const busyAfter = await machineBusy(1000)
  const hwmNar = procStatusKb(nsNar.pid, 'VmHWM')
  const hwmZstd = procStatusKb(nsZstd.pid, 'VmHWM')
  const hwmNodeRelay = procStatusKb(nodeRelay.pid, 'VmHWM')

  let profile: { narinfo: ProfileSummary, nar: ProfileSummary } | undefined
  if (PROFILE) {
    await Promise.all([ns.stop(), nsNar.stop(), nsZstd.stop(), nodeInfo.stop(), nodeRelay.stop()])
    profile = await profileRun(fx, nginx, work, scripts.narswarm)
  }

  // The report.
  const verdict = (value: number, target: number, higherIsBetter = true): string =>
    (higherIsBetter ? value >= target : value <= target) ? 'met' : 'MISSED'
  const rps = (c: 32 | 1, who: Who): number[] => wrk[c][who].map(r => r.rps)
  const lat = (who: Who, f: (r: WrkResult) => number): number[] => wrk[1][who].map(f)
  const mibs = (k: keyof typeof nar): number[] => nar[k].map(d => d.mibPerSec)
  const ttfb = (k: keyof typeof nar): number[] => nar[k].map(d => d.ttfbMs)
  const mb = (kb: number | undefined): string => kb === undefined ? '—' : fmt(kb / 1024, 1)
  const row = (name: string, a: number[], b: number[], digits: number, target = '', check?: (ratio: number, a: number) => string): string[] => {
    const r = ratio(a, b)
    return [name, fmt(median(a), digits), fmt(median(b), digits), fmt(r, 2), target, check?.(r, median(a)) ?? '']
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU'
  console.log(`\nnarswarm bench — ${new Date().toISOString()} — ${cpus().length} × ${cpu}`)
  console.log(`node ${process.version}, ${nginx.version}, ${hasTaskset() ? 'servers on CPU 0, clients on CPU 1 (taskset)' : 'no taskset: unpinned'}`)
  console.log(`fixture: ${NARINFOS} narinfos (mean ${fmt(fx.meanNarInfoBytes)} B), NAR ${NAR_MIB} MiB = ${fx.big.content}; ` +
    `zstd -3 copy ${fmt(fx.big.zstdSize / MiB, 1)} MiB (${fmt(fx.big.narSize / fx.big.zstdSize, 2)}×)`)
  const busy = (x: number | undefined): string => x === undefined ? '?' : `${fmt(x)} %`
  console.log(`other load (all CPUs busy while the bench idles, 1 s): ${busy(busyBefore)} before, ${busy(busyAfter)} after the measurements`)
  console.log(`${REPS} repetitions, medians; ratio = median of per-repetition ratios; wrk -t1 -d${DURATION}s; "node" = bench/lib/baseline-server.ts\n`)
  const rows: string[][] = [
    ['measure', 'value', 'reference', 'ratio', 'target', ''],
    row('narinfo hit req/s -c32: narswarm / nginx', rps(32, 'narswarm'), rps(32, 'nginx'), 0, `≥ ${TARGET.narinfo}`, r => verdict(r, TARGET.narinfo)),
    row('narinfo hit req/s -c1:  narswarm / nginx', rps(1, 'narswarm'), rps(1, 'nginx'), 0, `≥ ${TARGET.narinfo}`, r => verdict(r, TARGET.narinfo)),
    row('  -c1 mean latency ms:  narswarm / nginx', lat('narswarm', r => r.meanMs), lat('nginx', r => r.meanMs), 3, '≤ 1.5 (G2)', r => verdict(r, 1.5, false)),
    row('  -c1 p99 latency ms:   narswarm / nginx', lat('narswarm', r => r.p99Ms), lat('nginx', r => r.p99Ms), 3, '≤ 2 ms (G2)', (_, v) => verdict(v, 2, false)),
    row('  -c32: node in-memory / nginx', rps(32, 'node'), rps(32, 'nginx'), 0),
    row('  -c32: narswarm / node in-memory', rps(32, 'narswarm'), rps(32, 'node'), 0),
    row('  -c1:  narswarm / node in-memory', rps(1, 'narswarm'), rps(1, 'node'), 0),
    row(`NAR ${NAR_MIB} MiB/s, curl: narswarm relay / nginx`, mibs('narswarm'), mibs('nginx'), 0, `≥ ${TARGET.nar} (G4)`, r => verdict(r, TARGET.nar)),
    row('  NAR TTFB ms:          narswarm / nginx', ttfb('narswarm'), ttfb('nginx'), 2),
    row('verified relay MiB/s: narswarm / node sha256', mibs('narswarm'), sha, 0, `≥ ${TARGET.relayVsSha} (G6)`, r => verdict(r, TARGET.relayVsSha)),
    row('  relay from zstd upstream / sha256', mibs('zstd'), sha, 0),
    row('  relay from zstd / uncompressed relay', mibs('zstd'), mibs('narswarm'), 0),
    row('  node minimal relay+sha256 / sha256', mibs('node'), sha, 0),
    row('  narswarm relay / node minimal relay', mibs('narswarm'), mibs('node'), 0),
    ['peak RSS MB, narswarm NAR relay process', mb(hwmNar), '', '', '', ''],
    ['  its RSS MB before the first relay', mb(rssNarIdle), '', '', '', ''],
    ['  peak RSS MB, narswarm relay from zstd', mb(hwmZstd), '', '', '', ''],
    ['  peak RSS MB, node minimal relay', mb(hwmNodeRelay), '', '', '', ''],
    ['  narswarm narinfo process RSS MB after warm-up / runs', `${mb(rssAfterWarmup)} / ${mb(rssAfterNarinfo)}`, '', '', '', ''],
    ['  narswarm narinfo process peak RSS MB', mb(hwmAfterNarinfo), '', '', '', ''],
    ['  node in-memory narinfo server peak RSS MB', mb(hwmNodeInfo), '', '', '', '']
  ]
  console.log(table(rows))
  console.log('\nall repetitions:')
  for (const c of [32, 1] as const) {
    console.log(`  narinfo -c${c} req/s: ${order.map(w => `${w} ${rps(c, w).map(x => fmt(x)).join(', ')}`).join('; ')}`)
  }
  console.log(`  NAR MiB/s: ${(Object.keys(nar) as Array<keyof typeof nar>).map(k => `${k} ${mibs(k).map(x => fmt(x)).join(', ')}`).join('; ')}; sha256 ${sha.map(x => fmt(x)).join(', ')}`)
  const errors = Object.values(wrk).flatMap(s => Object.values(s).flat()).reduce((n, r) => n + r.badStatus + r.socketErrors, 0)
  if (errors > 0) console.log(`\nWARNING: wrk saw ${errors} non-2xx responses or socket errors; the req/s figures include them`)
  if (profile !== undefined) {
    printProfile(`CPU profile of narswarm, narinfo hits under wrk -c32 -d${DURATION}s`, profile.narinfo)
    printProfile(`CPU profile of narswarm, 3 relays of the ${NAR_MIB} MiB NAR`, profile.nar)
  }
  progress('done')
}

await runBench(main)
