import { createHash } from 'node:crypto'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Chunker, chunkStream, cdcIdOf, DEFAULT_CDC, GEAR, paramsOf } from '../../src/chunk/fastcdc.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'

function sizes (data: Uint8Array, piece = data.length): number[] {
  const c = new Chunker()
  const out: number[] = []
  for (let o = 0; o < data.length; o += piece) for (const ch of c.push(data.subarray(o, o + piece))) out.push(ch.length)
  const last = c.finish()
  if (last !== undefined) out.push(last.length)
  return out
}

const TEXT = Buffer.from(Array.from({ length: 40000 }, (_, i) => `line ${i % 977} ${(i * 7919) % 1013}\n`).join(''))

test('the chunker id names the parameters', () => {
  assert.equal(cdcIdOf(DEFAULT_CDC), 'fcdc32-v1/16384/65536/262144')
  assert.deepEqual(paramsOf('fcdc32-v1/16384/65536/262144'), DEFAULT_CDC)
  assert.equal(paramsOf('fcdc32-v2/16384/65536/262144'), undefined)
  assert.equal(paramsOf('fcdc32-v1/16384/65000/262144'), undefined)
})

test('the gear table is derived from sha256("gear" + i)', () => {
  for (let i = 0; i < 256; i++) assert.equal(GEAR[i], createHash('sha256').update(`gear${i}`).digest().readInt32BE(0))
  assert.deepEqual([GEAR[0], GEAR[1], GEAR[255]], [-1433237957, -91587786, -2068593164])
})

test('chunk boundaries of fixed inputs (test vectors: a change here changes the chunker id)', () => {
  assert.deepEqual(sizes(pseudoRandom('a', 2_000_000)), [58981, 22106, 39239, 46559, 20323, 138568, 40556, 191647, 20485, 126321, 73152, 24628, 98106, 34111, 65831, 93866, 128916, 80080, 107563, 93057, 100523, 122533, 120485, 37873, 114491])
  assert.deepEqual(sizes(TEXT.subarray(0, 1_000_000)), [167059, 70993, 69662, 117779, 31861, 54306])
})

test('a NAR under 64 KiB is one chunk; empty input has none; exactly min and max', () => {
  assert.deepEqual(sizes(pseudoRandom('b', 70_000)), [70_000])
  assert.deepEqual(sizes(pseudoRandom('b', 65_535)), [65_535])
  assert.deepEqual(sizes(new Uint8Array(0)), [])
  assert.deepEqual(sizes(new Uint8Array(1)), [1])
  assert.deepEqual(sizes(new Uint8Array(16384)), [16384])
  // Zeros never make the gear hash's top bits zero after the first bytes: only hard cuts at max.
  assert.deepEqual(sizes(new Uint8Array(262144 * 2 + 5)), [262144, 262144, 5])
})

test('boundaries do not depend on how the input is split into pieces', async () => {
  const data = pseudoRandom('a', 2_000_000)
  const whole = sizes(data)
  for (const piece of [1, 4093, 65536, 100_001]) {
    if (piece === 1) { assert.deepEqual(sizes(data.subarray(0, 300_000), 1), sizes(data.subarray(0, 300_000))); continue }
    assert.deepEqual(sizes(data, piece), whole, `pieces of ${piece}`)
  }
  const streamed: number[] = []
  let joined = 0
  for await (const c of chunkStream((async function * () { for (let o = 0; o < data.length; o += 77_777) yield data.subarray(o, o + 77_777) })())) {
    assert.ok(Buffer.from(c).equals(data.subarray(joined, joined + c.length)))
    joined += c.length
    streamed.push(c.length)
  }
  assert.deepEqual(streamed, whole)
})

test('every chunk but the last is within min..max', () => {
  const s = sizes(pseudoRandom('d', 8_000_000), 65536)
  for (const n of s.slice(0, -1)) assert.ok(n >= 16384 && n <= 262144, String(n))
  const mean = 8_000_000 / s.length
  assert.ok(mean > 50_000 && mean < 110_000, `mean chunk ${mean}`)
})

test('reusing one buffer for the chunks of a push gives the same chunks', () => {
  const data = pseudoRandom('reuse', 3_000_000)
  const fresh = new Chunker()
  const reused = new Chunker(DEFAULT_CDC, { reuse: true })
  for (let o = 0; o < data.length; o += 500_000) {
    const a = fresh.push(data.subarray(o, o + 500_000)).map(c => Buffer.from(c).toString('hex'))
    const b = reused.push(data.subarray(o, o + 500_000)).map(c => Buffer.from(c).toString('hex'))
    assert.deepEqual(b, a)
  }
  assert.deepEqual(reused.finish(), fresh.finish())
})
