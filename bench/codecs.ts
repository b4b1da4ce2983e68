/**
 * Measures every compression engine narswarm can use, on one realistic input: a NAR of parts of
 * /usr/lib and /usr/share made by our own `dumpPath`, cut to the requested size. Each engine
 * compresses the input (slow encoders get a smaller prefix, said in the table), then each engine
 * decompresses the output of the binary encoder of its codec; every round trip is checked by
 * sha256. Prints MiB/s of uncompressed data. Run: `node bench/codecs.ts [MiB, default 64]`.
 * Run it alone: the machine's other load changes the figures.
 */
import { createHash } from 'node:crypto'
import { compress, decompress, findBinary } from '../src/nix/compression.ts'
import type { CodecEngine, Compression } from '../src/nix/compression.ts'
import { collect } from '../test/helpers/bytes.ts'
import { chunks, usrNar } from './lib/usr-nar.ts'

const MiB = 1 << 20
const total = Number(process.argv[2] ?? 64) * MiB
const SLOW_PREFIX = 16 * MiB

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

interface Candidate { codec: Compression, engine: Exclude<CodecEngine, 'auto'>, label: string, slowCompress?: boolean }
const candidates: Candidate[] = [
  { codec: 'xz', engine: 'process', label: 'xz CLI -6', slowCompress: true },
  { codec: 'xz', engine: 'library', label: 'lzma-native 6 / liblzma-wasm', slowCompress: true },
  { codec: 'zstd', engine: 'process', label: 'zstd CLI -3' },
  { codec: 'zstd', engine: 'library', label: 'node:zlib zstd 3' },
  { codec: 'br', engine: 'library', label: 'node:zlib brotli q5' },
  { codec: 'bzip2', engine: 'process', label: 'bzip2 CLI -9' },
  { codec: 'bzip2', engine: 'library', label: 'JS decoder / compressjs', slowCompress: true }
]

const input = await usrNar(total)
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

const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  '))
