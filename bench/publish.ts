/**
 * The publisher's speed (`npm run bench:publish`), each figure against a ceiling measured in the
 * same run:
 *
 *   mapping     `narswarm publish --from-cache URL --narinfo-only` of `BENCH_PATHS` (10,000) signed
 *               narinfos served by nginx: paths/s, every signature verified, every record one
 *               sqlite transaction (target ≥ 700 paths/s, 1000× nix-subsubd's 0.7)
 *   publishing  `narswarm publish --from-cache file://…` of one `BENCH_NAR_MIB` (200) MiB NAR into
 *               a file:// backend (zstd, and uncompressed): MiB/s against this process's sha256
 *               and zstd-compression speed over the same bytes
 *   scale       `narswarm publish --from-cache file://… --narinfo-only` of a whole cache of
 *               `BENCH_SCALE_PATHS` (100,000) signed narinfos: peak RSS (target ≤ 200 MB), wall
 *               time, the time to the first progress line, and paths/s against this process
 *               reading, parsing and verifying the same narinfos (the floor of the work)
 *
 * The command runs as a child process, exactly as a user runs it; wall time includes its start.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, writeFileSync, mkdirSync, chmodSync, readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NixHash } from '../src/nix/hash.ts'
import { NarInfo } from '../src/nix/narinfo.ts'
import { generateSecretKey, narInfoFingerprint, signNarInfo, trustedKeyMap, verifySignature } from '../src/nix/signature.ts'
import { makeStorePath } from '../src/nix/store-path.ts'
import { compress } from '../src/nix/compression.ts'
import { makeEntry, writeSignedCache } from '../test/helpers/signed-cache.ts'
import { fmt, median, MiB, table } from './lib/measure.ts'
import { startNginx } from './lib/nginx.ts'
import { procStatusKb } from './lib/narswarm.ts'
import { intEnv, makeTempDir, runBench } from './lib/procs.ts'

const PATHS = intEnv('BENCH_PATHS', 10_000)
const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const SCALE_PATHS = intEnv('BENCH_SCALE_PATHS', 100_000)
const REPS = intEnv('BENCH_REPS', 3)
const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url))

const t0 = performance.now()
const progress = (msg: string): void => { process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`) }

interface Run { seconds: number, stdout: string, peakRssMiB: number, firstProgress: number | undefined }

/** Runs narswarm to the end; its peak RSS from the kernel's high-water mark (VmHWM), polled. */
async function narswarm (args: string[]): Promise<Run> {
  const started = performance.now()
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let firstProgress: number | undefined
  let peakKiB = 0
  const poll = setInterval(() => {
    peakKiB = Math.max(peakKiB, procStatusKb(child.pid!, 'VmHWM') ?? 0)
  }, 100)
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    if (firstProgress === undefined && s.includes('publish progress')) firstProgress = (performance.now() - started) / 1000
    if (stderr.length < 65536) stderr += s
  })
  const code = await new Promise(resolve => child.once('close', resolve))
  clearInterval(poll)
  if (code !== 0 || !/failed 0/.test(stdout)) throw new Error(`narswarm ${args[0]} exited ${String(code)}:\n${stdout.slice(0, 2000)}\n${stderr.slice(0, 2000)}`)
  return { seconds: (performance.now() - started) / 1000, stdout, peakRssMiB: peakKiB / 1024, firstProgress }
}

/** This process reading, parsing and verifying every narinfo of `dir`: the floor of the scale run's work. */
async function narInfoFloor (dir: string, publicKey: string): Promise<number> {
  const started = performance.now()
  const keys = trustedKeyMap([publicKey])
  let n = 0
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.narinfo')) continue
    const info = NarInfo.parse(await readFile(join(dir, name), 'utf8'))
    if (!info.sigs.some(s => verifySignature(s, narInfoFingerprint(info), keys) === 'valid')) throw new Error(`${name}: not signed`)
    n++
  }
  return n / ((performance.now() - started) / 1000)
}

/** N signed narinfos of realistic shape (references, deriver) in `dir`; returns their hash parts. */
function writeNarInfos (dir: string, n: number, key: string): string[] {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n')
  const paths = Array.from({ length: n }, (_, i) => makeStorePath('output:out', NixHash.of('sha256', randomBytes(32)), `pkg-${i}`))
  return paths.map((storePath, i) => {
    const refs = i === 0 ? [] : Array.from({ length: i % 9 }, (_, k) => paths[(i * 7 + k * 131 + 1) % i]!)
    const unsigned = NarInfo.build({
      storePath, url: `nar/${NixHash.of('sha256', randomBytes(32)).toNix32()}.nar.xz`, compression: 'xz',
      fileHash: NixHash.of('sha256', randomBytes(32)), fileSize: 1000 + i, narHash: NixHash.of('sha256', randomBytes(32)), narSize: 3000 + i, references: refs
    })
    const hashPart = storePath.slice(11, 43)
    writeFileSync(join(dir, `${hashPart}.narinfo`), signNarInfo(unsigned, key).toString())
    return hashPart
  })
}

async function ceiling (file: string, work: (source: AsyncIterable<Uint8Array>) => AsyncIterable<unknown>): Promise<number> {
  const started = performance.now()
  let bytes = 0
  for await (const _ of work((async function * () { for await (const c of createReadStream(file, { highWaterMark: MiB })) { bytes += (c as Buffer).length; yield c as Uint8Array } })())) { /* drained */ }
  return bytes / MiB / ((performance.now() - started) / 1000)
}

async function * sha256 (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const h = createHash('sha256')
  for await (const c of source) { h.update(c); yield c }
  h.digest()
}

async function main (): Promise<void> {
  const work = makeTempDir('narswarm-bench-publish-')
  chmodSync(work, 0o755)
  const key = generateSecretKey('bench-publish-1')
  progress(`fixture: ${PATHS} signed narinfos, and a cache with one ${NAR_MIB} MiB NAR, in ${work}`)
  const hashParts = writeNarInfos(join(work, 'narinfos'), PATHS, key.secret)
  const pathsFile = join(work, 'paths')
  writeFileSync(pathsFile, `${hashParts.join('\n')}\n`)
  const big = makeEntry('big', randomBytes(NAR_MIB * MiB))
  await writeSignedCache(join(work, 'big'), [big], key)
  const nginx = await startNginx(join(work, 'narinfos'), join(work, 'nginx'))

  const mapping: number[] = []
  for (let rep = 0; rep < REPS; rep++) {
    const r = await narswarm(['publish', '--from-cache', `${nginx.url}?trusted-public-keys=${key.public}`, '--narinfo-only', '--paths-from', pathsFile,
      '--state-dir', join(work, `state-map-${rep}`), '--log-level', 'warn'])
    mapping.push(PATHS / r.seconds)
    progress(`mapping rep ${rep + 1}/${REPS}: ${PATHS} paths in ${fmt(r.seconds, 2)} s = ${fmt(mapping.at(-1)!)} paths/s`)
  }

  const bigFile = join(work, 'big', NarInfo.parse((await import('node:fs')).readFileSync(join(work, 'big', `${big.hashPart}.narinfo`), 'utf8')).url)
  const full: Record<'zstd' | 'none', number[]> = { zstd: [], none: [] }
  const ceil: Record<'sha' | 'zstd' | 'both', number[]> = { sha: [], zstd: [], both: [] }
  for (let rep = 0; rep < REPS; rep++) {
    for (const c of ['zstd', 'none'] as const) {
      const r = await narswarm(['publish', '--from-cache', `file://${join(work, 'big')}?trusted-public-keys=${key.public}`, '--jobs', '1',
        '--backend', `file://${join(work, `nars-${c}-${rep}`)}?compression=${c}`, '--state-dir', join(work, `state-full-${c}-${rep}`), '--log-level', 'warn'])
      full[c].push(NAR_MIB / r.seconds)
    }
    ceil.sha.push(await ceiling(bigFile, sha256))
    ceil.zstd.push(await ceiling(bigFile, s => compress('zstd', s)))
    ceil.both.push(await ceiling(bigFile, s => compress('zstd', sha256(s))))
    progress(`publishing rep ${rep + 1}/${REPS}: zstd ${fmt(full.zstd.at(-1)!)}, none ${fmt(full.none.at(-1)!)} MiB/s; ceilings sha256 ${fmt(ceil.sha.at(-1)!)}, zstd ${fmt(ceil.zstd.at(-1)!)}, both ${fmt(ceil.both.at(-1)!)} MiB/s`)
  }
  progress(`scale fixture: ${SCALE_PATHS} signed narinfos`)
  writeNarInfos(join(work, 'scale'), SCALE_PATHS, key.secret)
  const scale: Run[] = []
  const floor: number[] = []
  for (let rep = 0; rep < REPS; rep++) {
    const r = await narswarm(['publish', '--from-cache', `file://${join(work, 'scale')}?trusted-public-keys=${key.public}`, '--narinfo-only',
      '--state-dir', join(work, `state-scale-${rep}`), '--log-level', 'info'])
    scale.push(r)
    floor.push(await narInfoFloor(join(work, 'scale'), key.public))
    progress(`scale rep ${rep + 1}/${REPS}: ${SCALE_PATHS} paths in ${fmt(r.seconds, 1)} s, peak RSS ${fmt(r.peakRssMiB)} MiB, first progress after ${fmt(r.firstProgress ?? NaN, 2)} s; floor ${fmt(floor.at(-1)!)} paths/s`)
  }
  const ratio = (a: number[], b: number[]): number => median(a.map((x, i) => x / b[i]!))
  const scaleRate = scale.map(r => SCALE_PATHS / r.seconds)
  console.log(`\nnarswarm publish bench — ${new Date().toISOString()} — node ${process.version}; ${REPS} repetitions, medians\n`)
  console.log(table([
    ['measure', 'value', 'reference', 'ratio', 'target'],
    [`narinfo-only mapping, ${PATHS} paths over HTTP: paths/s`, fmt(median(mapping)), '0.7 (nix-subsubd)', fmt(median(mapping) / 0.7), '≥ 700 paths/s'],
    [`publish ${NAR_MIB} MiB NAR → file:// zstd: MiB/s vs sha256+zstd in-process`, fmt(median(full.zstd)), fmt(median(ceil.both)), fmt(ratio(full.zstd, ceil.both), 2), ''],
    ['  vs zstd compression alone', fmt(median(full.zstd)), fmt(median(ceil.zstd)), fmt(ratio(full.zstd, ceil.zstd), 2), ''],
    [`publish ${NAR_MIB} MiB NAR → file:// none: MiB/s vs sha256 alone`, fmt(median(full.none)), fmt(median(ceil.sha)), fmt(ratio(full.none, ceil.sha), 2), ''],
    [`narinfo-only, whole file:// cache of ${SCALE_PATHS} paths: paths/s vs read+parse+verify in-process`, fmt(median(scaleRate)), fmt(median(floor)), fmt(ratio(scaleRate, floor), 2), ''],
    ['  wall time, s', fmt(median(scale.map(r => r.seconds)), 1), '', '', ''],
    ['  peak RSS, MiB', fmt(median(scale.map(r => r.peakRssMiB))), '', '', '≤ 200 MB'],
    ['  first progress line after, s', fmt(median(scale.map(r => r.firstProgress ?? NaN)), 2), '', '', '≤ 1 s']
  ]))
  await nginx.stop()
  progress('done')
}

await runBench(main)
