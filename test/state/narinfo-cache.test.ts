import { test } from 'node:test'
import assert from 'node:assert/strict'
import { openDatabase } from '../../src/util/sqlite.ts'
import { NarInfoCache } from '../../src/state/narinfo-cache.ts'

test('positive and negative entries expire after their own TTLs and are purged', () => {
  let now = 1_000_000
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 1000, negativeTtl: 100, now: () => now })
  cache.putPresent('a'.repeat(32), 'h1', 'text-a', 'up1')
  cache.putAbsent('b'.repeat(32))
  assert.deepEqual(cache.get('a'.repeat(32)), { present: true, text: 'text-a', upstream: 'up1', fetchedAt: 1_000_000, expiresAt: 1_001_000 })
  assert.deepEqual(cache.get('b'.repeat(32)), { present: false, fetchedAt: 1_000_000, expiresAt: 1_000_100 })
  assert.equal(cache.get('c'.repeat(32)), undefined)
  assert.deepEqual(cache.findByNarHash('h1'), [{ text: 'text-a', upstream: 'up1' }])
  now += 100
  assert.equal(cache.get('b'.repeat(32)), undefined, 'negative entry expired')
  assert.ok(cache.get('a'.repeat(32)))
  now += 900
  assert.equal(cache.get('a'.repeat(32)), undefined, 'positive entry expired')
  assert.deepEqual(cache.findByNarHash('h1'), [])
  assert.equal(cache.purgeExpired(), 2)
})

test('a later answer replaces an earlier one (negative → positive)', () => {
  const cache = new NarInfoCache(openDatabase(':memory:'), { positiveTtl: 1000, negativeTtl: 1000 })
  cache.putAbsent('a'.repeat(32))
  cache.putPresent('a'.repeat(32), 'h', 't', 'u')
  assert.equal(cache.get('a'.repeat(32))?.present, true)
})
