/**
 * A real `nix copy` of a real closure through narswarm, against the same copy straight from nginx
 * serving the same Nix-written xz binary cache, every round measured back to back in this process:
 *
 *   nginx   nix copy --from http://nginx/…       (Nix downloads xz and decompresses it itself)
 *   plain   nix copy --from http://nginx/none    (the same closure uncompressed: the floor for
 *                                                 any server handing Nix uncompressed NARs)
 *   cold    nix copy --from <fresh narswarm>     (narswarm fetches from nginx, decompresses,
 *                                                 verifies, spools, stores, streams uncompressed)
 *   warm    nix copy --from <the same narswarm>  (narinfos from its cache, NARs from its store,
 *                                                 as zstd: compressed chunks as stored)
 *
 * Each copy goes into a fresh local store with a fresh Nix cache directory (no narinfo disk
 * cache), require-sigs on. The closure: BENCH_PATHS (120) store paths built by the real Nix, each
 * a slice of the real files under /usr/lib (binaries and libraries: realistic compressibility),
 * BENCH_CLOSURE_MIB (100) MiB in all, plus a top path referring to all of them. Servers on CPU 0,
 * Nix on CPU 1 (taskset). Ratios are narswarm's time over nginx's; the goals are cold ≤ 1.1,
 * warm ≤ 0.5. Run: `node --disable-warning=ExperimentalWarning bench/nix-copy.ts [--profile]`
 * (`--profile`: a CPU profile of the first round's narswarm, top functions printed). Needs
 * nix-store, nginx, taskset.
 */
import { chmodSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeNixEnv, nixVersion, type NixEnv } from '../test/helpers/nix.ts'
import { fmt, machineBusy, median, MiB, table } from './lib/measure.ts'
import { procCpuSeconds, startNarswarm } from './lib/narswarm.ts'
import { startNginx } from './lib/nginx.ts'
import { newestProfile, summarizeProfile, type ProfileSummary } from './lib/profile.ts'
import { CLIENT_CPU, intEnv, makeTempDir, pinned, runBench, runCommand } from './lib/procs.ts'

const PATHS = intEnv('BENCH_PATHS', 120)
const CLOSURE_MIB = intEnv('BENCH_CLOSURE_MIB', 100)
const REPS = intEnv('BENCH_REPS', 3)
const SOURCE_DIR = '/usr/lib/x86_64-linux-gnu'
const TARGET = { cold: 1.1, warm: 0.5 }
const PROFILE = process.argv.includes('--profile')

const t0 = performance.now()
const progress = (msg: string): void => { process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`) }

/** Regular files of `dir` (not recursing), largest last, cut into `n` slices of about `total` / n bytes. */
function slices (dir: string, n: number, total: number): string[][] {
  const files = readdirSync(dir).map(name => join(dir, name)).flatMap(path => {
    try {
      const st = statSync(path)
      return st.isFile() && st.size > 0 && st.size < total / n ? [{ path, size: st.size }] : []
    } catch { return [] }
  }).sort((a, b) => a.path.localeCompare(b.path))
  const out: string[][] = Array.from({ length: n }, () => [])
  let bucket = 0
  let filled = 0
  for (const f of files) {
    if (bucket >= n) break
    out[bucket]!.push(f.path)
    filled += f.size
    if (filled >= total / n) { bucket++; filled = 0 }
  }
  if (out.some(s => s.length === 0)) throw new Error(`${dir} holds too few files for ${n} paths of ${fmt(total / n / MiB, 2)} MiB`)
  return out
}

/** Builds the closure with the real Nix; returns the top path, its path count and NAR bytes. */
async function buildClosure (nix: NixEnv): Promise<{ top: string, paths: number, narBytes: number }> {
  const lists = slices(SOURCE_DIR, PATHS, CLOSURE_MIB * MiB)
  const nonce = String(Date.now())
  const expression = `let
  mk = i: files: builtins.derivation {
    name = "slice-\${toString i}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
    NONCE = "${nonce}"; args = [ "-c" "mkdir -p $out/lib && cp -L \${files} $out/lib/" ];
  };
  slices = [ ${lists.map((files, i) => `(mk ${i} "${files.join(' ')}")`).join('\n    ')} ];
in builtins.derivation {
  name = "closure-top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir -p $out && echo \${builtins.concatStringsSep " " (map toString slices)} > $out/refs" ];
}
`
  const file = join(nix.dir, 'closure.nix')
  writeFileSync(file, expression)
  const top = (await nix.run('nix-build', [file, '--no-out-link', '--cores', '2', '--max-jobs', '2'])).trim()
  const infos = JSON.parse(await nix.run('nix', ['path-info', '--json', '-r', top])) as Array<{ narSize: number }>
  return { top, paths: infos.length, narBytes: infos.reduce((n, i) => n + i.narSize, 0) }
}

/** `nix copy` of `top` from `from` into a fresh store with a fresh Nix cache directory; seconds. */
async function copy (nix: NixEnv, from: string, top: string, publicKey: string): Promise<number> {
  const dir = makeTempDir('narswarm-bench-copy-')
  const [cmd, args] = pinned(CLIENT_CPU, 'nix', ['copy', '--from', from, '--to', `local?root=${join(dir, 'store')}`, top,
    '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'])
  const started = performance.now()
  await runCommand(cmd, args, { env: { ...nix.env, XDG_CACHE_HOME: join(dir, 'cache') } })
  const seconds = (performance.now() - started) / 1000
  await runCommand('rm', ['-rf', dir])
  return seconds
}

async function main (): Promise<void> {
  if (nixVersion() === false) throw new Error('nix-store is not installed (apt-get install nix-bin)')
  const busyBefore = await machineBusy()
  const nix = await makeNixEnv()
  try {
    progress(`building a closure of ${PATHS} paths, ${CLOSURE_MIB} MiB from ${SOURCE_DIR}`)
    const closure = await buildClosure(nix)
    const secret = (await nix.run('nix', ['key', 'generate-secret', '--key-name', 'bench-1'])).trim()
    const keyFile = join(nix.dir, 'secret')
    writeFileSync(keyFile, secret)
    const publicKey = (await nix.run('nix', ['key', 'convert-secret-to-public'], { input: secret })).trim()
    const root = makeTempDir('narswarm-bench-cache-')
    progress(`nix copy into an xz cache (${closure.paths} paths, ${fmt(closure.narBytes / MiB, 1)} MiB of NARs)`)
    await nix.run('nix', ['copy', '--to', `file://${join(root, 'xz')}?compression=xz&parallel-compression=true&secret-key=${keyFile}`, closure.top])
    await nix.run('nix', ['copy', '--to', `file://${join(root, 'none')}?compression=none&secret-key=${keyFile}`, closure.top])
    chmodSync(root, 0o755) // nginx's worker may run as another user (nobody, www-data) when started as root
    await runCommand('chmod', ['-R', 'a+rX', root])
    const nginx = await startNginx(root, makeTempDir('narswarm-bench-nginx-'))
    const upstream = `${nginx.url}/xz`
    let profile: ProfileSummary | undefined
    let warmProfile: ProfileSummary | undefined
    const rounds: Array<{ nginx: number, plain: number, cold: number, warm: number, coldCpu: number, warmCpu: number }> = []
    for (let rep = 0; rep < REPS; rep++) {
      const profDir = PROFILE && rep === 0 ? makeTempDir('narswarm-bench-prof-') : undefined
      const ns = await startNarswarm(`${upstream}?trusted-public-keys=${publicKey}`, makeTempDir('narswarm-bench-state-'),
        profDir === undefined ? {} : { cpuProfDir: profDir })
      try {
        const base = await copy(nix, upstream, closure.top, publicKey)
        const plain = await copy(nix, `${nginx.url}/none`, closure.top, publicKey)
        const cpu0 = procCpuSeconds(ns.pid) ?? NaN
        const cold = await copy(nix, ns.url, closure.top, publicKey)
        const cpu1 = procCpuSeconds(ns.pid) ?? NaN
        const warm = await copy(nix, ns.url, closure.top, publicKey)
        rounds.push({ nginx: base, plain, cold, warm, coldCpu: cpu1 - cpu0, warmCpu: (procCpuSeconds(ns.pid) ?? NaN) - cpu1 })
        progress(`round ${rep + 1}/${REPS}: nginx ${fmt(base, 2)} s (uncompressed ${fmt(plain, 2)} s), narswarm cold ${fmt(cold, 2)} s, warm ${fmt(warm, 2)} s`)
      } finally {
        await ns.stop()
      }
      if (profDir !== undefined) {
        const file = newestProfile(profDir)
        if (file !== undefined) {
          profile = summarizeProfile(file, { top: 20 })
          // The warm copy is the last thing narswarm did before it was stopped.
          warmProfile = summarizeProfile(file, { top: 25, windowMs: rounds[0]!.warm * 1000 })
        }
      }
    }
    await nginx.stop()
    const med = (k: 'nginx' | 'plain' | 'cold' | 'warm' | 'coldCpu' | 'warmCpu'): number => median(rounds.map(r => r[k]))
    const ratio = (k: 'plain' | 'cold' | 'warm'): number => median(rounds.map(r => r[k] / r.nginx))
    const busyAfter = await machineBusy()
    process.stdout.write(`\nnix copy of ${closure.paths} paths (${fmt(closure.narBytes / MiB, 1)} MiB of NARs, xz cache), median of ${REPS} rounds\n\n`)
    process.stdout.write(table([
      ['', 'seconds', 'vs nginx', 'goal', 'narswarm CPU s'],
      ['nginx (Nix decompresses xz)', fmt(med('nginx'), 2), '1.00', '', ''],
      ['nginx, uncompressed cache', fmt(med('plain'), 2), fmt(ratio('plain'), 2), '', ''],
      ['narswarm cold (from nginx)', fmt(med('cold'), 2), fmt(ratio('cold'), 2), `≤ ${TARGET.cold}`, fmt(med('coldCpu'), 2)],
      ['narswarm warm (from its store)', fmt(med('warm'), 2), fmt(ratio('warm'), 2), `≤ ${TARGET.warm}`, fmt(med('warmCpu'), 2)]
    ]) + '\n')
    if (profile !== undefined) {
      process.stdout.write(`\nnarswarm CPU profile of round 1 (cold + warm copy): ${fmt(profile.totalMs)} ms sampled, ${fmt(profile.idlePct)} % idle; top self time:\n`)
      for (const line of profile.self) process.stdout.write(`  ${fmt(line.pct, 1).padStart(5)} %  ${line.name}\n`)
    }
    if (warmProfile !== undefined) {
      process.stdout.write(`\nthe same, the warm copy only (its last ${fmt(warmProfile.totalMs)} ms): ${fmt(warmProfile.idlePct)} % idle; top inclusive time:\n`)
      for (const line of warmProfile.inclusive) process.stdout.write(`  ${fmt(line.pct, 1).padStart(5)} %  ${line.name}\n`)
    }
    process.stdout.write(`\nother load on this machine: ${busyBefore === undefined ? '?' : fmt(busyBefore)} % before, ${busyAfter === undefined ? '?' : fmt(busyAfter)} % after\n`)
  } finally {
    await nix.cleanup()
  }
}

await runBench(main)
