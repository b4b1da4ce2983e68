/**
 * The in-process xz and bzip2 decoders, whose output per call is bounded (src/nix/xz-decoder.ts:
 * liblzma in WebAssembly; src/nix/bzip2-decoder.ts), against the unbounded streams they replaced
 * (lzma-native's stream, unbzip2-stream), in this process, on the same data: a NAR of /usr parts compressed by the `xz` and
 * `bzip2` programs. Runs alternate between the two so that the machine's other load falls on both;
 * the median of each is reported, and the ratio bounded / unbounded (above 1: the bounded one is
 * faster). Sizes: a large NAR (MiB/s) and the small NARs the in-process engines are chosen for
 * (milliseconds per NAR). Run: `node bench/decoders.ts [MiB, default 16] [rounds, default 5]`.
 */
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { decompress } from '../src/nix/compression.ts'
import { collect } from '../test/helpers/bytes.ts'
import { median, MiB } from './lib/measure.ts'
import { chunks, usrNar } from './lib/usr-nar.ts'

const size = Number(process.argv[2] ?? 16) * MiB
const rounds = Number(process.argv[3] ?? 5)
const require = createRequire(import.meta.url)

async function through (data: Uint8Array, s: NodeJS.ReadWriteStream): Promise<number> {
  return await new Promise((resolve, reject) => {
    let n = 0
    s.on('data', (d: Buffer) => { n += d.length })
    s.on('end', () => resolve(n))
    s.on('error', reject)
    Readable.from(chunks(data)).pipe(s)
  })
}

const unbounded = {
  xz: async (data: Uint8Array) => await through(data, (require('lzma-native') as { createStream: (c: string, o: object) => NodeJS.ReadWriteStream }).createStream('streamDecoder', { bufsize: 256 * 1024 })),
  bzip2: async (data: Uint8Array) => await through(data, (require('unbzip2-stream') as () => NodeJS.ReadWriteStream)())
}
const bounded = async (codec: 'xz' | 'bzip2', data: Uint8Array): Promise<number> =>
  (await collect(decompress(codec, chunks(data), { engine: 'library' }))).length

const input = await usrNar(size)
const rows: string[][] = [['codec', 'input', 'bounded', 'unbounded', 'bounded / unbounded speed']]
for (const codec of ['xz', 'bzip2'] as const) {
  for (const [label, plain, reps] of [[`${(input.length / MiB).toFixed(0)} MiB NAR`, input, 1], ['4 KiB NAR', input.subarray(0, 4096), 50], ['64 KiB NAR', input.subarray(0, 65536), 20]] as const) {
    const packed = execFileSync(codec, ['-c', '-6'], { input: plain, maxBuffer: 1 << 30 })
    const times: Record<'b' | 'u', number[]> = { b: [], u: [] }
    for (let r = 0; r < rounds; r++) {
      for (const [k, f] of [['b', async () => await bounded(codec, packed)], ['u', async () => await unbounded[codec](packed)]] as const) {
        const t = performance.now()
        for (let i = 0; i < reps; i++) if (await f() !== plain.length) throw new Error(`${codec}: wrong length`)
        times[k].push((performance.now() - t) / reps)
      }
    }
    const b = median(times.b)
    const u = median(times.u)
    const show = (ms: number): string => reps === 1 ? `${(plain.length / MiB / (ms / 1000)).toFixed(1)} MiB/s` : `${ms.toFixed(2)} ms`
    rows.push([codec, label, show(b), show(u), (u / b).toFixed(2)])
  }
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
