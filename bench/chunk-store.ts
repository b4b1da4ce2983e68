/**
 * The chunk store (docs/chunk-store.md), measured against baselines run in the same process:
 *
 * 1. Rendering a NAR from the store over HTTP (a minimal server around `render` and narswarm's
 *    `sendBody`, pinned to the server CPU like nginx) vs nginx sending the raw NAR file with
 *    sendfile, and vs node:crypto sha256 over the same file (the verification ceiling). Two NARs:
 *    the realistic one of bench/lib/fixture.ts (stored zstd-compressed) and pseudo-random bytes
 *    (stored raw). The realistic one also as the zstd stream Nix gets for a stored NAR, counted
 *    in NAR bytes a second.
 *    Ingesting the same two NARs into the store (chunk, hash, compress, write, fsync, index)
 *    vs node:crypto sha256 over the file.
 * 2. Stored bytes / logical bytes after two versions of a closure built with the real Nix: a
 *    dependency changes, everything that refers to it is rebuilt.
 * 3. Peak RSS of a process that ingests, then renders, a NAR of BENCH_BIG_GIB GiB; and of
 *    `narswarm serve` as `npm start` runs it, relaying such a NAR from an upstream into its store
 *    and then serving it from there (bench/lib/server-rss.ts).
 *
 * Run: `node --disable-warning=ExperimentalWarning bench/chunk-store.ts` (BENCH_NAR_MIB=200,
 * BENCH_REPS=3, BENCH_BIG_GIB=4, BENCH_FSYNC=1; BENCH_PARTS=render,dedup,big picks the parts).
 * Needs nginx, curl, taskset; Nix for part 2.
 */
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import { chmodSync, createReadStream, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LocalChunkStore } from '../src/chunk/store.ts'
import { sendBody } from '../src/server/send-body.ts'
import { SERVE_ENV, SERVE_NODE_FLAGS } from '../src/cli/node-flags.ts'
import { NixHash } from '../src/nix/hash.ts'
import { dumpPath } from '../src/nix/nar/dump.ts'
import { queryPathInfos } from '../src/publish/path-info.ts'
import { openDatabase, stateDatabase } from '../src/util/sqlite.ts'
import { makeNixEnv, nixVersion } from '../test/helpers/nix.ts'
import { pseudoRandom } from '../test/helpers/pseudo-random.ts'
import { bigNar } from './lib/big-nar.ts'
import { makeFixture } from './lib/fixture.ts'
import { curlDownload, fmt, machineBusy, median, MiB, sha256Ceiling, table } from './lib/measure.ts'
import { startNginx } from './lib/nginx.ts'
import { serverRss } from './lib/server-rss.ts'
import { freePort, intEnv, makeTempDir, pinned, runBench, runCommand, SERVER_CPU, spawnTracked, stopTracked, waitForHttp } from './lib/procs.ts'

const NAR_MIB = intEnv('BENCH_NAR_MIB', 200)
const REPS = intEnv('BENCH_REPS', 3)
const BIG_GIB = intEnv('BENCH_BIG_GIB', 4)
const FSYNC = intEnv('BENCH_FSYNC', 1) !== 0
/** The parts to run (BENCH_PARTS, comma-separated): render, dedup, big. */
const PARTS = new Set((process.env.BENCH_PARTS ?? 'render,dedup,big').split(','))
const SELF = new URL(import.meta.url).pathname

/** Chunk files are fsynced as in narswarm; BENCH_FSYNC=0 leaves the disk out (not crash-safe). */
async function openStore (dir: string): Promise<LocalChunkStore> {
  return await LocalChunkStore.open({ db: openDatabase(stateDatabase(dir)), dir, capacity: 64 * 1024 ** 3, fsync: FSYNC })
}

/** Child mode: a store holding the given files, rendered at /<n> over HTTP. */
async function serve (dir: string, port: number, files: string[]): Promise<void> {
  const store = await openStore(dir)
  const ids: NixHash[] = []
  const ingestMiBs: number[] = []
  for (const file of files) {
    const h = createHash('sha256')
    let size = 0
    for await (const c of createReadStream(file, { highWaterMark: MiB })) { h.update(c as Buffer); size += (c as Buffer).length }
    const narHash = new NixHash('sha256', new Uint8Array(h.digest()))
    const t = performance.now()
    await store.ingest({ narHash, narSize: size }, createReadStream(file, { highWaterMark: MiB }))
    ingestMiBs.push(size / MiB / ((performance.now() - t) / 1000))
    ids.push(narHash)
  }
  writeFileSync(join(dir, 'ingest.json'), JSON.stringify(ingestMiBs))
  // /<n>: the NAR uncompressed, every chunk decompressed and checked; /z<n>: the zstd stream Nix
  // gets for a stored NAR (src/server/zstd-nar.ts), compressed chunks as stored, their stored
  // bytes checked.
  createServer((req, res) => {
    const zstd = req.url!.startsWith('/z')
    const narHash = ids[Number(req.url!.slice(zstd ? 2 : 1))]
    if (narHash === undefined) { res.writeHead(404).end(); return }
    const frames = zstd ? store.renderFrames(narHash) : undefined
    const body = zstd
      ? frames === undefined ? undefined : (async function * () { for await (const c of frames) yield * c.frames })()
      : store.render(narHash)
    if (body === undefined) { res.writeHead(404).end(); return }
    res.writeHead(200, zstd ? { 'content-type': 'application/x-nix-nar' } : { 'content-type': 'application/x-nix-nar', 'content-length': String(store.manifest(narHash)!.narSize) })
    sendBody(body, res, new AbortController().signal).catch(() => res.destroy())
  }).listen(port, '127.0.0.1')
}

/** Child mode: ingest then render a NAR of `gib` GiB of unique bytes; prints timings and VmHWM. */
async function big (dir: string, gib: number): Promise<void> {
  const nar = await bigNar(gib)
  const store = await openStore(dir)
  let t = performance.now()
  await store.ingest({ narHash: nar.narHash, narSize: nar.size }, nar.body())
  const ingestS = (performance.now() - t) / 1000
  t = performance.now()
  const check = createHash('sha256')
  for await (const c of store.render(nar.narHash)!) check.update(c)
  const renderS = (performance.now() - t) / 1000
  if (!check.digest().equals(nar.narHash.digest)) throw new Error('rendered NAR does not match')
  const hwm = /VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]
  process.stdout.write(JSON.stringify({ ingestMiBs: nar.size / MiB / ingestS, renderMiBs: nar.size / MiB / renderS, hwmKiB: Number(hwm), stored: store.stats().storedBytes }) + '\n')
  await store.close()
}

async function renderBench (root: string): Promise<string[][]> {
  const fixture = await makeFixture(join(root, 'fixture'), { narInfos: 1, narMiB: NAR_MIB })
  const plain = join(fixture.root, 'plain')
  const randomFile = join(plain, 'random.nar')
  writeFileSync(randomFile, pseudoRandom('render', NAR_MIB * MiB))
  const randomHex = createHash('sha256').update(pseudoRandom('render', NAR_MIB * MiB)).digest('hex')
  const nginx = await startNginx(plain, join(root, 'nginx'))
  const port = await freePort()
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, ['--disable-warning=ExperimentalWarning', SELF, '--serve', join(root, 'serve-state'), String(port), fixture.big.file, randomFile])
  const server = spawnTracked('store server', cmd, args)
  await waitForHttp(`http://127.0.0.1:${port}/0`, server, 600_000)
  const ingestMiBs = JSON.parse(readFileSync(join(root, 'serve-state', 'ingest.json'), 'utf8')) as number[]
  const cases = [
    { name: `realistic ${NAR_MIB} MiB (${fixture.big.content}; chunks zstd)`, nginx: `${nginx.url}/nar/${fixture.big.narHash}.nar`, store: `http://127.0.0.1:${port}/0`, zstd: `http://127.0.0.1:${port}/z0`, file: fixture.big.file, hex: fixture.big.narHashHex },
    { name: `pseudo-random ${NAR_MIB} MiB (chunks raw)`, nginx: `${nginx.url}/random.nar`, store: `http://127.0.0.1:${port}/1`, zstd: undefined, file: randomFile, hex: randomHex }
  ]
  const rows: string[][] = []
  for (const [i, c] of cases.entries()) {
    await curlDownload(c.nginx, NAR_MIB * MiB)
    await curlDownload(c.store, NAR_MIB * MiB)
    if (c.zstd !== undefined) await curlDownload(c.zstd, undefined)
    const vsNginx: number[] = []
    const vsSha: number[] = []
    const store: number[] = []
    const ng: number[] = []
    const sha: number[] = []
    const zstdStore: number[] = []
    const zstdVsNginx: number[] = []
    for (let r = 0; r < REPS; r++) {
      const n = (await curlDownload(c.nginx, NAR_MIB * MiB)).mibPerSec
      const s = (await curlDownload(c.store, NAR_MIB * MiB)).mibPerSec
      const h = await sha256Ceiling(c.file, c.hex)
      ng.push(n); store.push(s); sha.push(h)
      vsNginx.push(s / n); vsSha.push(s / h)
      if (c.zstd !== undefined) {
        // Counted in NAR bytes delivered per second: the stream is smaller than the NAR it carries.
        const z = await curlDownload(c.zstd, undefined)
        zstdStore.push(NAR_MIB / z.seconds)
        zstdVsNginx.push(NAR_MIB / z.seconds / n)
      }
    }
    rows.push([`${c.name}: store / nginx sendfile MiB/s`, fmt(median(store)), fmt(median(ng)), fmt(median(vsNginx), 2), '≥ 0.5'])
    if (zstdStore.length > 0) {
      rows.push([`${c.name}: as zstd to Nix / nginx sendfile, NAR MiB/s`, fmt(median(zstdStore)), fmt(median(ng)), fmt(median(zstdVsNginx), 2), '—'])
    }
    rows.push([`${c.name}: store / node sha256 MiB/s`, fmt(median(store)), fmt(median(sha)), fmt(median(vsSha), 2), '≥ 0.8'])
    rows.push([`${c.name}: ingest${FSYNC ? ' (fsync)' : ' (no fsync)'} / node sha256 MiB/s`, fmt(ingestMiBs[i]!), fmt(median(sha)), fmt(ingestMiBs[i]! / median(sha), 2), '—'])
  }
  await stopTracked(server)
  await nginx.stop()
  return rows
}

const CLOSURE = `{ variant }:
let
  mk = name: script: builtins.derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin";
  };
  # The dependency that changes: a library directory and its version.
  dep = mk "libdep" ''
    mkdir -p $out/lib; cp -r /usr/lib/python3.11/email /usr/lib/python3.11/json $out/lib/
    echo "version \${variant}" > $out/lib/VERSION
    if [ "\${variant}" = 2 ]; then sed -i 's/charset/Charset/' $out/lib/email/charset.py; fi
  '';
  # Packages that refer to it: rebuilt when it changes, so their store-path references change.
  pkg = name: dir: mk name ''
    mkdir -p $out/share $out/nix-support; cp -r \${dir} $out/share/
    echo \${dep} > $out/nix-support/deps
    printf '#!/bin/sh\\nexec \${dep}/lib/run "$@"\\n' > $out/run
  '';
  pkgs = [ (pkg "gcc-lib" "/usr/lib/gcc") (pkg "include" "/usr/include") (pkg "perl" "/usr/share/perl")
           (pkg "python" "/usr/lib/python3.11") (pkg "binaries" "/usr/lib/x86_64-linux-gnu/perl-base") ];
in mk "top" ''
  mkdir -p $out; echo \${toString pkgs} > $out/pkgs
''
`

async function dedupBench (root: string): Promise<string[][]> {
  if (nixVersion() === false) return [['closure rebuild (real Nix)', 'skipped: nix-store not installed', '', '', '']]
  const nix = await makeNixEnv()
  try {
    const file = join(nix.dir, 'closure.nix')
    writeFileSync(file, CLOSURE)
    const store = await openStore(join(root, 'dedup-state'))
    const versions: Array<{ logical: number, stored: number, unique: number, paths: number }> = []
    for (const variant of ['1', '2']) {
      const top = (await runCommand('nix-build', [file, '--argstr', 'variant', variant, '--no-out-link'], { env: nix.env })).trim()
      const { infos } = await queryPathInfos([top], { recursive: true })
      let logical = 0
      for (const info of infos) {
        await store.ingest({ narHash: info.narHash, narSize: info.narSize, storePath: info.storePath }, dumpPath(info.storePath))
        logical += info.narSize
      }
      const s = store.stats()
      versions.push({ logical, stored: s.storedBytes, unique: s.uniqueBytes, paths: infos.length })
    }
    await store.close()
    const [v1, v2] = versions as [typeof versions[0], typeof versions[0]]
    return [
      [`closure v1 (${v1.paths} paths): stored / logical bytes`, fmt(v1.stored / MiB, 1), fmt(v1.logical / MiB, 1), fmt(v1.stored / v1.logical, 3), '—'],
      ['v1 + v2 (one dependency changed): stored / logical', fmt(v2.stored / MiB, 1), fmt((v1.logical + v2.logical) / MiB, 1), fmt(v2.stored / (v1.logical + v2.logical), 3), '—'],
      ['v2 bytes not already in v1 (new chunk bytes / v2 logical)', fmt((v2.unique - v1.unique) / MiB, 1), fmt(v2.logical / MiB, 1), fmt((v2.unique - v1.unique) / v2.logical, 3), '—']
    ]
  } finally {
    await nix.cleanup()
  }
}

async function bigBench (root: string): Promise<string[][]> {
  // The child runs as `narswarm serve` does (src/cli/node-flags.ts).
  const out = await runCommand(process.execPath, [...SERVE_NODE_FLAGS, '--disable-warning=ExperimentalWarning', SELF, '--big', join(root, 'big-state'), String(BIG_GIB)],
    { env: { ...SERVE_ENV, ...process.env } })
  const r = JSON.parse(out) as { ingestMiBs: number, renderMiBs: number, hwmKiB: number, stored: number }
  const server = await serverRss(join(root, 'rss-state'), BIG_GIB)
  return [
    [`${BIG_GIB} GiB NAR, ingest and render in this script's child: peak RSS MiB`, fmt(r.hwmKiB / 1024), '200', fmt(r.hwmKiB / 1024 / 200, 2), '≤ 1'],
    [`  ingest / render MiB/s (stored ${fmt(r.stored / MiB)} MiB)`, fmt(r.ingestMiBs), fmt(r.renderMiBs), '', ''],
    [`${BIG_GIB} GiB NAR through narswarm serve (compiled, as npm start): peak RSS MiB`, fmt(server.peakMiB), '200', fmt(server.peakMiB / 200, 2), '≤ 1'],
    ['  RSS idle / peak after the relay and ingest', fmt(server.idleMiB), fmt(server.relayPeakMiB), '', ''],
    ['  MiB/s relayed from the upstream / served from the store', fmt(server.relayMiBs), fmt(server.storeMiBs), '', '']
  ]
}

if (process.argv[2] === '--serve') {
  await serve(process.argv[3]!, Number(process.argv[4]), process.argv.slice(5))
} else if (process.argv[2] === '--big') {
  await big(process.argv[3]!, Number(process.argv[4]))
} else {
  await runBench(async () => {
    const root = makeTempDir('narswarm-bench-chunk-')
    chmodSync(root, 0o755) // nginx's worker is not root
    const busy = await machineBusy()
    process.stdout.write(`other work on the CPUs before: ${busy === undefined ? '?' : fmt(busy)} %\n`)
    const rows = [
      ['measure', 'value', 'reference', 'ratio', 'target'],
      ...PARTS.has('render') ? await renderBench(root) : [],
      ...PARTS.has('dedup') ? await dedupBench(root) : [],
      ...PARTS.has('big') ? await bigBench(root) : []
    ]
    process.stdout.write(table(rows) + '\n')
  })
}
