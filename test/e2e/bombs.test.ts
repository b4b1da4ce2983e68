/**
 * Decompression bombs from a hostile upstream. Compression, URL and FileSize are not covered by a
 * narinfo's signature, so an upstream can relabel a signed path's NAR as a small file that expands
 * to gigabytes. For each codec and each engine narswarm may pick (the engine follows the size the
 * upstream announces, which the upstream chooses too), a running narswarm must: keep its peak
 * memory (VmHWM) far below the bomb's size, keep answering other requests (the largest latency of
 * `/nix-cache-info`, polled throughout, stays under PROBE_BOUND_MS — generous for a loaded 2-core
 * machine, far below the seconds a synchronous decoder stalled), and never serve the NAR. Before
 * the decoders were bounded, the xz case grew the peak by 165 MiB and the bzip2 case did not end
 * within a minute.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { compress, findBinary } from '../../src/nix/compression.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { makeEntry, writeSignedCache, type CacheEntry } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'

const MiB = 1 << 20
/** Growth of the server process's peak RSS allowed during a bomb: far below every bomb (≥ 512 MiB). */
const RSS_GROWTH = 64 * MiB
/**
 * Largest latency allowed to a probe request during a bomb. Measured on a 2-core machine under a
 * load average of ~15: 10–330 ms (the first use of an in-process decoder loads its module); an
 * unbounded decoder held the event loop for seconds.
 */
const PROBE_BOUND_MS = 1000

async function * zeros (size: number): AsyncGenerator<Uint8Array> {
  const block = new Uint8Array(MiB)
  for (let done = 0; done < size; done += MiB) yield block
}

const made = new Map<string, Promise<Buffer>>()
async function packed (codec: string, size: number, level?: number): Promise<Buffer> {
  const key = `${codec} ${size} ${level}`
  if (!made.has(key)) {
    made.set(key, (async () => {
      const parts: Uint8Array[] = []
      for await (const c of compress(codec, zeros(size), level === undefined ? {} : { level })) parts.push(c)
      return Buffer.concat(parts)
    })())
  }
  return await made.get(key)!
}

/** `size` zeros in a format narswarm reads but does not write, by node:zlib (gzip) or the program. */
async function foreign (codec: 'gzip' | 'lz4', size: number): Promise<Buffer> {
  const parts: Buffer[] = []
  const out = codec === 'gzip' ? createGzip({ level: 9 }) : spawn('lz4', ['-c', '-q'], { stdio: ['pipe', 'pipe', 'ignore'] })
  const readable = 'stdout' in out ? out.stdout! : out
  const writable = 'stdin' in out ? out.stdin! : out
  const collected = (async () => { for await (const c of readable) parts.push(c as Buffer) })()
  await pipeline(Readable.from(zeros(size)), writable)
  await collected
  return Buffer.concat(parts)
}

/** `stream` repeated until the file is at least `minBytes` and `copies` long: concatenated streams are one valid file. */
function repeated (stream: Buffer, copies: number, minBytes = 0): Buffer {
  const n = Math.max(copies, Math.ceil(minBytes / stream.length))
  return Buffer.concat(Array.from({ length: n }, () => stream))
}

function vmHwm (pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then(s => Number(/VmHWM:\s+(\d+) kB/.exec(s)![1]) * 1024)
}

interface Bomb { name: string, compression: string, ext: string, file: () => Promise<Buffer | number>, expands: string, needs?: string }

// The file size picks the engine under `auto` (see resolveEngine): xz below 1 MiB and bzip2 below
// 64 KiB decode in-process, above with the program.
const BOMBS: Bomb[] = [
  { name: 'xz, in-process (liblzma)', compression: 'xz', ext: '.xz', expands: '2 GiB', file: async () => repeated(await packed('xz', 64 * MiB, 1), 32) },
  { name: 'xz, the xz program', compression: 'xz', ext: '.xz', expands: '> 7 GiB', needs: 'xz', file: async () => repeated(await packed('xz', 64 * MiB, 1), 16, 1.1 * MiB) },
  { name: 'bzip2, in-process (JS)', compression: 'bzip2', ext: '.bz2', expands: '2 GiB', file: async () => repeated(await packed('bzip2', 64 * MiB), 32) },
  { name: 'bzip2, the bzip2 program', compression: 'bzip2', ext: '.bz2', expands: '> 50 GiB', needs: 'bzip2', file: async () => repeated(await packed('bzip2', 64 * MiB), 16, 70 * 1024) },
  { name: 'zstd (node:zlib)', compression: 'zstd', ext: '.zst', expands: '512 MiB', file: async () => await packed('zstd', 512 * MiB) },
  { name: 'brotli (node:zlib)', compression: 'br', ext: '.br', expands: '512 MiB', file: async () => await packed('br', 512 * MiB) },
  { name: 'gzip (node:zlib)', compression: 'gzip', ext: '', expands: '512 MiB', file: async () => await foreign('gzip', 512 * MiB) },
  { name: 'lz4, the lz4 program', compression: 'lz4', ext: '.lz4', expands: '512 MiB', needs: 'lz4', file: async () => await foreign('lz4', 512 * MiB) },
  { name: 'none (an endless body)', compression: 'none', ext: '', expands: '1 GiB', file: async () => 1024 * MiB }
]

describe('decompression bombs from a hostile upstream', () => {
  let dir: string
  let entry: CacheEntry
  let narInfoText: string
  let server: CacheServer
  let publicKey: string

  before(async () => {
    dir = tempDir('narswarm-bombs-')
    entry = makeEntry('bombed')
    ;({ publicKey } = await writeSignedCache(dir, [entry]))
    narInfoText = await readFile(join(dir, `${entry.hashPart}.narinfo`), 'utf8')
    server = await startCacheServer(dir)
  })
  after(async () => { await server?.close() })

  for (const bomb of BOMBS) {
    test(bomb.name, { timeout: 60_000 }, async t => {
      if (bomb.needs !== undefined && findBinary(bomb.needs) === false) { t.skip(`'${bomb.needs}' is not on PATH`); return }
      const url = `nar/bomb-${bomb.compression}-${bomb.needs ?? 'lib'}.nar${bomb.ext}`
      const file = await bomb.file()
      if (typeof file === 'number') {
        await writeFile(join(dir, url), '')
        await truncate(join(dir, url), file)
      } else {
        await writeFile(join(dir, url), file)
      }
      const fileSize = typeof file === 'number' ? file : file.length
      // The signed narinfo, relabelled: signature kept, only the unsigned fields changed.
      const relabelled = NarInfo.parse(narInfoText).toString()
        .replace(/^URL: .*$/m, `URL: ${url}`).replace(/^Compression: .*$/m, `Compression: ${bomb.compression}`)
        .replace(/^FileSize: .*$/m, `FileSize: ${fileSize}`).replace(/^FileHash: .*\n/m, '')
      const narInfoPath = `/${entry.hashPart}.narinfo`
      const fault = { match: (p: string) => p === narInfoPath, fault: { kind: 'body' as const, body: relabelled } }
      server.faults.push(fault)
      const narswarm = await startNarswarm(['--upstream', `${server.url}?trusted-public-keys=${publicKey}`])
      try {
        const before = await vmHwm(narswarm.child.pid!)
        const info = await fetch(`${narswarm.url}${narInfoPath}`)
        assert.equal(info.status, 200)
        const narUrl = NarInfo.parse(await info.text()).url

        let probing = true
        let maxProbe = 0
        let probes = 0
        const prober = (async () => {
          while (probing) {
            const t0 = performance.now()
            const r = await fetch(`${narswarm.url}/nix-cache-info`)
            await r.text()
            maxProbe = Math.max(maxProbe, performance.now() - t0)
            probes++
            await new Promise(resolve => setTimeout(resolve, 10))
          }
        })()
        let served = false
        try {
          const res = await fetch(`${narswarm.url}/${narUrl}`)
          const body = Buffer.from(await res.arrayBuffer())
          served = res.status === 200 && body.length === entry.nar.length &&
            createHash('sha256').update(body).digest('hex') === createHash('sha256').update(entry.nar).digest('hex')
        } catch {
          // A response cut short: not served.
        }
        // A few probes after the NAR request too: a decoder still running would show here.
        await new Promise(resolve => setTimeout(resolve, 300))
        probing = false
        await prober

        const peak = await vmHwm(narswarm.child.pid!)
        t.diagnostic(`bomb ${bomb.expands} in ${(fileSize / 1024).toFixed(0)} KiB; VmHWM ${(before / MiB).toFixed(0)} → ${(peak / MiB).toFixed(0)} MiB; ${probes} probes, slowest ${maxProbe.toFixed(0)} ms`)
        assert.equal(served, false, 'the bomb must not be served as the NAR')
        assert.ok(peak - before < RSS_GROWTH, `peak RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB (bound ${RSS_GROWTH / MiB} MiB)`)
        assert.ok(maxProbe < PROBE_BOUND_MS, `a probe took ${maxProbe.toFixed(0)} ms during the bomb (bound ${PROBE_BOUND_MS} ms)`)
        assert.ok(probes >= 3, 'probes ran during the bomb')
        await narswarm.waitForLog(l => l.level >= 40 && /NAR|more than the expected NarSize/.test(`${l.msg} ${String(l.err ?? '')}`), 5000)
      } finally {
        server.faults.splice(server.faults.indexOf(fault), 1)
        assert.equal(await narswarm.stop(), 0)
      }
    })
  }
})
