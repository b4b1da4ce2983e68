import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ExpiringLru } from '../../src/util/lru.ts'

test('ExpiringLru evicts the least recently used entry and honours expiry', () => {
  let now = 0
  const lru = new ExpiringLru<string, number>(2, () => now)
  lru.set('a', 1, 100)
  lru.set('b', 2, 100)
  assert.equal(lru.get('a'), 1) // a is now the most recent
  lru.set('c', 3, 100)
  assert.equal(lru.get('b'), undefined, 'b was least recently used')
  assert.equal(lru.get('a'), 1)
  now = 100
  assert.equal(lru.get('a'), undefined, 'expired')
  assert.equal(lru.size, 1)
})
