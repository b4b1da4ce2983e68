/**
 * Measures every compression engine narswarm can use, on one realistic input: a NAR of parts of
 * /usr/lib and /usr/share made by our own `dumpPath`, cut to the requested size. Each engine
 * compresses the input (slow encoders get a smaller prefix, said in the table), then each engine
 * decompresses the output of the binary encoder of its codec; every round trip is checked by
 * sha256. Prints MiB/s of uncompressed data. Run: `node bench/codecs.ts [MiB, default 64]`.
 * Run it alone: the machine's other load changes the figures.
 */
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { compress, decompress, findBinary } from '../src/nix/compression.ts'
import type { CodecEngine, Compression } from '../src/nix/compression.ts'
import { dumpPath } from '../src/nix/nar/dump.ts'
import { collect } from '../test/helpers/bytes.ts'

const MiB = 1 << 20
const total = Number(process.argv[2] ?? 64) * MiB
const SLOW_PREFIX = 16 * MiB

async function makeInput (): Promise<Buffer> {
  const parts: Uint8Array[] = []
  let size = 0
  for (const dir of ['/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/gcc', '/usr/include', '/usr/share']) {
    if (!existsSync(dir)) continue
    for await (const chunk of dumpPath(dir)) {
      parts.push(chunk)
      size += chunk.length
      if (size >= total) return Buffer.concat(parts).subarray(0, total)
    }
  }
  return Buffer.concat(parts)
}

async function * chunks (b: Uint8Array, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

interface Candidate { codec: Compression, engine: Exclude<CodecEngine, 'auto'>, label: string, slowCompress?: boolean }
const candidates: Candidate[] = [
  { codec: 'xz', engine: 'process', label: 'xz CLI -6', slowCompress: true },
  { codec: 'xz', engine: 'library', label: 'lzma-native preset 6', slowCompress: true },
  { codec: 'zstd', engine: 'process', label: 'zstd CLI -3' },
  { codec: 'zstd', engine: 'library', label: 'node:zlib zstd 3' },
  { codec: 'br', engine: 'library', label: 'node:zlib brotli q5' },
  { codec: 'bzip2', engine: 'process', label: 'bzip2 CLI -9' },
  { codec: 'bzip2', engine: 'library', label: 'JS decoder / compressjs', slowCompress: true }
]

const input = await makeInput()
const slowInput = input.subarray(0, Math.min(SLOW_PREFIX, input.length))
console.log(`input: NAR of /usr parts, ${(input.length / MiB).toFixed(1)} MiB (slow encoders: first ${(slowInput.length / MiB).toFixed(0)} MiB)`)
const reference = new Map<Compression, { data: Buffer, plain: Uint8Array }>()
const rows: string[][] = [['codec', 'engine', 'compress MiB/s', 'decompress MiB/s', 'ratio']]

for (const c of candidates) {
  if (c.engine === 'process' && findBinary(c.codec === 'bzip2' ? 'bzip2' : c.codec) === false) {
    rows.push([c.codec, c.label, 'absent', 'absent', '']); continue
  }
  const plain = c.slowCompress === true ? slowInput : input
  let t = performance.now()
  const packed = await collect(compress(c.codec, chunks(plain), { engine: c.engine }))
  const cSpeed = plain.length / MiB / ((performance.now() - t) / 1000)
  if (!reference.has(c.codec) || plain.length > reference.get(c.codec)!.plain.length) reference.set(c.codec, { data: packed, plain })
  const ref = reference.get(c.codec)!
  t = performance.now()
  const unpacked = await collect(decompress(c.codec, chunks(ref.data), { engine: c.engine }))
  const dSpeed = ref.plain.length / MiB / ((performance.now() - t) / 1000)
  if (sha(unpacked) !== sha(ref.plain)) throw new Error(`${c.label}: round trip mismatch`)
  rows.push([c.codec, c.label, `${cSpeed.toFixed(1)}${c.slowCompress === true ? ` (${(plain.length / MiB).toFixed(0)} MiB)` : ''}`,
    `${dSpeed.toFixed(1)} (${(ref.plain.length / MiB).toFixed(0)} MiB)`, (packed.length / plain.length).toFixed(3)])
  console.error(`done: ${c.label}`)
}

// What one small NAR costs (a spawn for process engines): 50 round trips of a 4 KiB NAR.
const small = input.subarray(0, 4096)
rows.push(['', '', '', '', ''], ['codec', 'engine', '4 KiB compress ms', '4 KiB decompress ms', ''])
for (const c of candidates) {
  if (c.engine === 'process' && findBinary(c.codec === 'bzip2' ? 'bzip2' : c.codec) === false) continue
  let tc = 0
  let td = 0
  for (let i = 0; i < 50; i++) {
    let t = performance.now()
    const packed = await collect(compress(c.codec, chunks(small), { engine: c.engine }))
    tc += performance.now() - t
    t = performance.now()
    await collect(decompress(c.codec, chunks(packed), { engine: c.engine }))
    td += performance.now() - t
  }
  rows.push([c.codec, c.label, (tc / 50).toFixed(2), (td / 50).toFixed(2), ''])
}

// The in-process decoders bound their output per call (see src/nix/xz-decoder.ts and
// bzip2-decoder.ts); the streams they replaced decoded each input chunk to the end. Both, on the
// same data, in this process: the ratio is bounded / unbounded speed.
const require = createRequire(import.meta.url)
async function through (data: Uint8Array, s: NodeJS.ReadWriteStream): Promise<Uint8Array> {
  return await new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    s.on('data', (d: Buffer) => parts.push(d))
    s.on('end', () => resolve(Buffer.concat(parts)))
    s.on('error', reject)
    Readable.from(chunks(data)).pipe(s)
  })
}
async function unboundedXz (data: Uint8Array): Promise<Uint8Array> {
  const lzma = require('lzma-native') as { createStream: (coder: string, o: object) => NodeJS.ReadWriteStream }
  return await through(data, lzma.createStream('streamDecoder', { bufsize: 256 * 1024 }))
}
async function unboundedBzip2 (data: Uint8Array): Promise<Uint8Array> {
  return await through(data, (require('unbzip2-stream') as () => NodeJS.ReadWriteStream)())
}
rows.push(['', '', '', '', ''], ['codec', 'in-process decoder', 'bounded MiB/s', 'unbounded MiB/s', 'ratio'])
for (const [codec, unbounded] of [['xz', unboundedXz], ['bzip2', unboundedBzip2]] as const) {
  const ref = reference.get(codec)
  if (ref === undefined) continue
  const speed = async (f: () => Promise<Uint8Array>): Promise<number> => {
    let best = 0
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      const out = await f()
      if (sha(out) !== sha(ref.plain)) throw new Error(`${codec}: round trip mismatch`)
      best = Math.max(best, ref.plain.length / MiB / ((performance.now() - t) / 1000))
    }
    return best
  }
  const old = await speed(async () => await unbounded(ref.data))
  const now = await speed(async () => await collect(decompress(codec, chunks(ref.data), { engine: 'library' })))
  rows.push([codec, `${(ref.plain.length / MiB).toFixed(0)} MiB`, now.toFixed(1), old.toFixed(1), (now / old).toFixed(2)])
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
