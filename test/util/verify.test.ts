import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import { sliceBytes, verifyNar } from '../../src/util/verify.ts'
import { chunks } from '../helpers/bytes.ts'

async function collect (source: AsyncIterable<Uint8Array>, into: Uint8Array[] = []): Promise<Buffer> {
  for await (const c of source) into.push(c)
  return Buffer.concat(into)
}

const data = randomBytes(100_000)
const expected = { narHash: NixHash.of('sha256', data), narSize: data.length }

test('verifyNar passes the exact bytes through when hash and size match', async () => {
  assert.deepEqual(await collect(verifyNar(chunks(data, 4096), expected)), data)
})

test('verifyNar never releases the final bytes of a wrong stream', async () => {
  const bad = Buffer.from(data); bad[50_000]! ^= 1
  const seen: Uint8Array[] = []
  await assert.rejects(collect(verifyNar(chunks(bad, 4096), expected), seen), { name: 'IntegrityError', message: /hash mismatch/ })
  assert.ok(Buffer.concat(seen).length < data.length, 'the consumer never saw a complete body')
  await assert.rejects(collect(verifyNar(chunks(data.subarray(0, 99_999), 4096), expected)), { name: 'IntegrityError', message: /size mismatch/ })
  const longer = Buffer.concat([data, Buffer.from([0])])
  const got: Uint8Array[] = []
  await assert.rejects(collect(verifyNar(chunks(longer, 4096), expected), got), { name: 'IntegrityError', message: /more than the expected NarSize/ })
})

test('sliceBytes returns exactly the requested range and holds its end until the source is verified', async () => {
  for (const [start, end] of [[0, 100_000], [1000, 100_000], [4095, 4097], [99_999, 100_000], [0, 1]] as const) {
    assert.deepEqual(await collect(sliceBytes(verifyNar(chunks(data, 4096), expected), start, end)), data.subarray(start, end))
  }
  const bad = Buffer.from(data); bad[99_000]! ^= 1
  await assert.rejects(collect(sliceBytes(verifyNar(chunks(bad, 4096), expected), 0, 10)), { name: 'IntegrityError' })
})
