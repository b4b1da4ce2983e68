import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FormatError } from '../../src/errors.ts'
import { decodeManifest, encodeManifest } from '../../src/chunk/manifest.ts'
import type { Manifest } from '../../src/chunk/types.ts'
import { NixHash } from '../../src/nix/hash.ts'

const id = (n: number): Uint8Array => new Uint8Array(32).fill(n)
const manifest = (sizes: number[], cdcId = 'fcdc32-v1/16384/65536/262144'): Manifest => ({
  cdcId,
  narHash: NixHash.of('sha256', 'x'),
  narSize: sizes.reduce((a, b) => a + b, 0),
  chunks: sizes.map((size, i) => ({ id: id(i), size }))
})

test('a manifest round-trips through its binary form, 36 bytes per chunk', () => {
  const m = manifest([70_000, 20_000, 5])
  const bytes = encodeManifest(m)
  assert.equal(Buffer.from(bytes.subarray(0, 4)).toString(), 'NSM1')
  assert.equal(bytes.length, 4 + 1 + m.cdcId.length + 32 + 8 + 4 + 3 * 36)
  assert.deepEqual(decodeManifest(bytes), m)
  assert.deepEqual(decodeManifest(encodeManifest(manifest([]))), manifest([]))
})

test('decoding untrusted bytes is strict', () => {
  const good = encodeManifest(manifest([70_000, 20_000, 5]))
  const bad = (mutate: (b: Buffer) => Buffer, why: RegExp): void => {
    assert.throws(() => decodeManifest(mutate(Buffer.from(good))), (e: Error) => e instanceof FormatError && why.test(e.message))
  }
  bad(b => { b.write('NSM2'); return b }, /NSM1/)
  bad(b => b.subarray(0, b.length - 1), /length/)
  bad(b => Buffer.concat([b, Buffer.alloc(36)]), /length/)
  bad(b => b.subarray(0, 20), /truncated/)
  // narSize no longer the sum of the chunk sizes.
  const sizeAt = 4 + 1 + 28 + 32
  bad(b => { b.writeBigUInt64BE(90_006n, sizeAt); return b }, /add up/)
  // A chunk count that would need more bytes than the NAR allows.
  bad(b => { b.writeUInt32BE(1_000_000, sizeAt + 8); return b }, /chunks for a NAR/)
  // A chunk over the chunker's maximum, or under its minimum before the last.
  assert.throws(() => decodeManifest(encodeManifest(manifest([300_000, 10]))), /outside/)
  assert.throws(() => decodeManifest(encodeManifest(manifest([70_000, 100, 70_000]))), /outside/)
  assert.throws(() => decodeManifest(encodeManifest(manifest([70_000, 0]))), /empty/)
  // Unknown chunker ids are carried, with the generic checks only.
  assert.equal(decodeManifest(encodeManifest(manifest([1, 2, 3], 'other/1'))).cdcId, 'other/1')
})
