import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseRange } from '../../src/server/range.ts'

test('Range headers', () => {
  assert.equal(parseRange(undefined, 100), undefined)
  assert.deepEqual(parseRange('bytes=10-', 100), [10, 100])
  assert.deepEqual(parseRange('bytes=0-0', 100), [0, 1])
  assert.deepEqual(parseRange('bytes=10-19', 100), [10, 20])
  assert.deepEqual(parseRange('bytes=90-1000', 100), [90, 100])
  assert.deepEqual(parseRange('bytes=-10', 100), [90, 100])
  assert.deepEqual(parseRange('bytes=-1000', 100), [0, 100])
  assert.equal(parseRange('bytes=1-2,5-6', 100), undefined, 'multiple ranges: whole body')
  assert.equal(parseRange('items=1-2', 100), undefined)
  for (const h of ['bytes=100-', 'bytes=20-10', 'bytes=-0']) assert.throws(() => parseRange(h, 100), { name: 'RangeNotSatisfiableError' }, h)
})
