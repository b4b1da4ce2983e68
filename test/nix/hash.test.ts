import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { decodeNix32, encodeNix32 } from '../../src/nix/nix32.ts'
import { NixHash } from '../../src/nix/hash.ts'

// Vectors from the protocol reference, §4.2 (`nix hash file --base32` on Nix 2.8).
const vectors: Array<[string, string, string]> = [
  ['sha256', '', '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'],
  ['sha256', 'abc', '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
  ['sha1', '', '143xibwh31h9bvxzalr0sjvbbvpa6ffs'],
  ['md5', '', '3y8bwfr609h3lh9ch0izcqq7fl']
]

test('nix32 encodes the reference vectors and decodes them back', () => {
  for (const [algo, input, expected] of vectors) {
    const digest = createHash(algo).update(input).digest()
    assert.equal(encodeNix32(digest), expected)
    assert.deepEqual(Buffer.from(decodeNix32(expected, digest.length)), digest)
  }
  const one = new Uint8Array(20); one[0] = 1
  assert.equal(encodeNix32(one), '00000000000000000000000000000001')
  const high = new Uint8Array(20); high[19] = 0x80
  assert.equal(encodeNix32(high), 'h0000000000000000000000000000000')
})

test('nix32 decoding rejects foreign characters, wrong lengths and overflow bits', () => {
  assert.throws(() => decodeNix32('e0000000000000000000000000000000', 20), { name: 'FormatError' })
  assert.throws(() => decodeNix32('0000', 20), { name: 'FormatError' })
  // 52 chars carry 260 bits; a sha256 in nix32 must start with 0 or 1.
  assert.throws(() => decodeNix32('2mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73', 32), { name: 'FormatError' })
})

test('NixHash parses every encoding Nix accepts into the same value', () => {
  const hex = '1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13'
  const forms = [
    `sha256:${hex}`, `sha256:${hex.toUpperCase()}`,
    'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw',
    'sha256:HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=',
    'sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM='
  ]
  for (const f of forms) {
    const h = NixHash.parse(f)
    assert.equal(h.toBase16(), hex, f)
    assert.equal(h.toString(), 'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw')
    assert.equal(h.toSri(), 'sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=')
  }
})

test('NixHash rejects malformed hashes with a FormatError', () => {
  for (const bad of ['', 'sha256', 'blake9:abc', '04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw',
    'sha256:abc', 'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqe', 'sha256-!!!!', 'md5-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=']) {
    assert.throws(() => NixHash.parse(bad), { name: 'FormatError' }, bad)
  }
})

test('fromNix32: a digest as a URL holds it, or undefined for what only looks like one', () => {
  const h = NixHash.of('sha256', 'a NAR')
  assert.ok(NixHash.fromNix32('sha256', h.toNix32())!.equals(h))
  assert.equal(NixHash.fromNix32('sha256', `z${'0'.repeat(51)}`), undefined, 'bits beyond 256')
  assert.equal(NixHash.fromNix32('sha256', '0'.repeat(51)), undefined, 'too short')
  assert.equal(NixHash.fromNix32('sha256', `e${'0'.repeat(51)}`), undefined, 'not the alphabet')
})
