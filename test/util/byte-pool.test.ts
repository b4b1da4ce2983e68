import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BytePool, giveBack } from '../../src/util/byte-pool.ts'
import { Spool } from '../../src/server/spool.ts'
import { tempDir } from '../helpers/temp.ts'

test('a lent piece goes back to its pool once, as the whole buffer; others are left alone', () => {
  const pool = new BytePool(1024, 2)
  const a = pool.take()
  const b = pool.take()
  assert.notEqual(a, b)
  const piece = pool.lend(a.subarray(0, 10), a)
  giveBack(new Uint8Array(1024)) // never lent
  giveBack(b.subarray(0)) // a view of a taken buffer that was not lent with it
  assert.equal(pool.free, 0)
  giveBack(piece)
  giveBack(piece)
  assert.equal(pool.free, 1)
  assert.equal(pool.take(), a)
})

test('a pool keeps at most `keep` buffers, and none of another size', () => {
  const pool = new BytePool(16, 2)
  const buffers = [pool.take(), pool.take(), pool.take()]
  for (const b of buffers) giveBack(pool.lend(b, b))
  assert.equal(pool.free, 2)
  pool.put(new Uint8Array(8))
  assert.equal(pool.free, 2)
})

test('a spool read into a pool returns the bytes asked for, at most a buffer, and hands the buffer back', async () => {
  const spool = await Spool.create(tempDir('narswarm-pool-'))
  try {
    const bytes = Uint8Array.from({ length: 3000 }, (_, i) => i % 256)
    await spool.append(bytes)
    const pool = new BytePool(1024, 4)
    const first = await spool.read(100, Infinity, pool)
    assert.deepEqual(first, bytes.subarray(100, 1124))
    const last = await spool.read(2500, 1000, pool)
    assert.deepEqual(last, bytes.subarray(2500))
    giveBack(first)
    giveBack(last)
    assert.equal(pool.free, 2)
    assert.equal((await spool.read(3000, 10, pool)).length, 0)
  } finally {
    await spool.release()
  }
})
