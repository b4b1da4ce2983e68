/**
 * The in-process xz decoder (liblzma in WebAssembly): bounded output per read, nothing decoded
 * ahead of reads, decoders side by side and one after another in reused module instances, and
 * precise errors for corrupt and truncated input.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { XzDecoder, XZ_INPUT } from '../../src/nix/xz-decoder.ts'
import { findBinary } from '../../src/nix/compression.ts'

const xz = (data: Uint8Array, ...args: string[]): Buffer => execFileSync('xz', ['-c', ...args], { input: data, maxBuffer: 1 << 30 })
const noXz = findBinary('xz') === false ? 'needs the xz program to make its input' : false

/** Feeds `packed` to a decoder, reading everything; returns the output and the largest read. */
function decodeAll (d: XzDecoder, packed: Uint8Array): { out: Buffer, largest: number } {
  const parts: Uint8Array[] = []
  let largest = 0
  const drain = (): void => {
    for (let out = d.read(); out !== undefined; out = d.read()) { parts.push(out); largest = Math.max(largest, out.length) }
  }
  for (let i = 0; i < packed.length; i += XZ_INPUT) {
    d.push(packed.subarray(i, i + XZ_INPUT))
    drain()
  }
  d.finish()
  drain()
  assert.ok(d.done)
  return { out: Buffer.concat(parts), largest }
}

test('a bomb is decoded only as far as it is read, at most 256 KiB a read', { skip: noXz }, async () => {
  const zeros = Buffer.alloc(64 << 20)
  const packed = xz(zeros, '-9')
  assert.ok(packed.length < 64 << 10)
  const d = await XzDecoder.open()
  try {
    d.push(packed)
    const first = d.read()!
    assert.ok(first.length > 0 && first.length <= 256 << 10, `${first.length} bytes in one read`)
    // The rest comes one bounded read at a time.
    let total = first.length
    for (let out = d.read(); out !== undefined; out = d.read()) {
      assert.ok(out.length <= 256 << 10)
      total += out.length
    }
    d.finish()
    for (let out = d.read(); out !== undefined; out = d.read()) total += out.length
    assert.equal(total, zeros.length)
  } finally {
    d.close()
  }
})

test('decoders side by side and one after another (module instances reused) each get their own bytes', { skip: noXz }, async () => {
  const inputs = [randomBytes(700_000), Buffer.from('x'.repeat(3_000_000)), randomBytes(10)]
  const packed = inputs.map(b => xz(b, '-6'))
  const a = await XzDecoder.open()
  const b = await XzDecoder.open()
  try {
    // Interleaved: a's input and b's in turn.
    const outA: Uint8Array[] = []
    const outB: Uint8Array[] = []
    for (let i = 0; i < Math.max(packed[0]!.length, packed[1]!.length); i += XZ_INPUT) {
      for (const [d, p, out] of [[a, packed[0]!, outA], [b, packed[1]!, outB]] as const) {
        if (i >= p.length) continue
        d.push(p.subarray(i, i + XZ_INPUT))
        for (let o = d.read(); o !== undefined; o = d.read()) out.push(o)
      }
    }
    for (const [d, out] of [[a, outA], [b, outB]] as const) {
      d.finish()
      for (let o = d.read(); o !== undefined; o = d.read()) out.push(o)
    }
    assert.ok(Buffer.concat(outA).equals(inputs[0]!))
    assert.ok(Buffer.concat(outB).equals(inputs[1]!))
  } finally {
    a.close()
    b.close()
  }
  for (let round = 0; round < 3; round++) {
    const d = await XzDecoder.open()
    try {
      assert.ok(decodeAll(d, packed[round]!).out.equals(inputs[round]!))
    } finally {
      d.close()
    }
  }
})

test('corrupt and truncated streams, and what is not xz at all, are refused with what is wrong', { skip: noXz }, async () => {
  const packed = xz(randomBytes(200_000), '-6')
  const flipped = Buffer.from(packed)
  flipped[Math.floor(flipped.length / 2)]! ^= 0x40
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['a flipped byte', flipped, /corrupt/],
    ['cut short', packed.subarray(0, packed.length - 100), /truncated/],
    ['not xz', Buffer.from('hello, this is not an xz stream at all'), /not in the xz format/],
    ['garbage after the stream', Buffer.concat([packed, Buffer.from('trailing bytes that are not xz')]), /not in the xz format|corrupt/]
  ]
  for (const [what, input, message] of cases) {
    const d = await XzDecoder.open()
    try {
      assert.throws(() => decodeAll(d, input), message, what)
    } finally {
      d.close()
    }
  }
  // A decoder after those failures still works.
  const d = await XzDecoder.open()
  try {
    assert.equal(decodeAll(d, xz(Buffer.from('fine'))).out.toString(), 'fine')
  } finally {
    d.close()
  }
})

test('the vendored liblzma files are the ones vendor/liblzma-wasm/README.md names', () => {
  const dir = new URL('../../vendor/liblzma-wasm/', import.meta.url)
  const readme = readFileSync(new URL('README.md', dir), 'utf8')
  const rows = [...readme.matchAll(/^\| (liblzma\.\w+) \| ([0-9a-f]{64}) \|$/gm)]
  assert.deepEqual(rows.map(r => r[1]).sort(), ['liblzma.js', 'liblzma.wasm'])
  for (const [, file, sha256] of rows) assert.equal(createHash('sha256').update(readFileSync(new URL(file!, dir))).digest('hex'), sha256, file)
})
