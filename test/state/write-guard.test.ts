import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { DatabaseSync } from 'node:sqlite'
import { join } from 'node:path'
import { StorageError } from '../../src/errors.ts'
import { createLogger } from '../../src/log.ts'
import { openDatabase } from '../../src/util/sqlite.ts'
import { NarInfoCache } from '../../src/state/narinfo-cache.ts'
import { storageFailure, WriteGuard } from '../../src/state/write-guard.ts'
import { tempDir } from '../helpers/temp.ts'

function capture (): { log: ReturnType<typeof createLogger>, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _enc, done) { lines.push(JSON.parse(String(chunk)) as Record<string, unknown>); done() } })
  return { log: createLogger('info', stream), lines }
}

test('storage failures are told apart from bugs', () => {
  const file = join(tempDir(), 'x.sqlite')
  openDatabase(file).exec('CREATE TABLE t (x)')
  const readOnly = new DatabaseSync(file, { readOnly: true })
  let err: unknown
  try { readOnly.exec('INSERT INTO t VALUES (1)') } catch (e) { err = e }
  const failure = storageFailure(err)
  assert.ok(failure instanceof StorageError)
  assert.equal(failure.name, 'StorageError')
  assert.equal(failure.cause, err)
  assert.match(failure.message, /readonly database \(SQLITE_READONLY\)/)
  assert.ok(storageFailure(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })) instanceof StorageError)
  assert.ok(storageFailure(Object.assign(new Error('database or disk is full'), { code: 'ERR_SQLITE_ERROR', errcode: 13 })) instanceof StorageError)
  assert.ok(storageFailure(Object.assign(new Error('disk I/O error'), { code: 'ERR_SQLITE_ERROR', errcode: 778 })) instanceof StorageError, 'extended code SQLITE_IOERR_WRITE')
  let syntax: unknown
  try { readOnly.exec('SELEC 1') } catch (e) { syntax = e }
  assert.equal(storageFailure(syntax), undefined, 'a syntax error is a bug')
  assert.equal(storageFailure(new TypeError('x')), undefined)
  const guard = new WriteGuard({ what: 'test', log: capture().log })
  assert.throws(() => guard.run(() => { throw new TypeError('bug') }, 0), TypeError, 'bugs are not swallowed')
})

test('the guard logs once, then at most once a minute, and again when writes work', async () => {
  let now = 0
  const { log, lines } = capture()
  const guard = new WriteGuard({ what: 'test', log, now: () => now })
  const full = (): never => { throw Object.assign(new Error('database or disk is full'), { code: 'ERR_SQLITE_ERROR', errcode: 13 }) }
  assert.equal(guard.run(() => 1, 0), 1)
  assert.equal(lines.length, 0)
  for (let i = 0; i < 100; i++) { assert.equal(guard.run(full, -1), -1); now += 100 }
  assert.equal(lines.length, 1)
  assert.equal(lines[0]!.msg, 'state write failed; serving without storing until it works again')
  assert.match(String(lines[0]!.err), /SQLITE_FULL/)
  assert.ok(guard.failing)
  now = 60_000
  guard.run(full, -1)
  assert.equal(lines.length, 2)
  assert.equal(lines[1]!.msg, 'state writes still failing; serving without storing')
  assert.equal(lines[1]!.skipped, 100)
  assert.equal(guard.run(() => 2, 0), 2)
  assert.equal(lines.length, 3)
  assert.equal(lines[2]!.msg, 'state writes work again')
  assert.equal(guard.failing, false)
  const enospc = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
  assert.equal(await guard.runAsync(async () => { throw enospc }, 'fallback'), 'fallback', 'the same for asynchronous writes')
  assert.equal(lines.length, 4)
  assert.match(String(lines[3]!.err), /\(ENOSPC\)/)
  await assert.rejects(guard.runAsync(async () => { throw new RangeError('bug') }, 'fallback'), RangeError)
})

test('a narinfo cache whose database refuses writes keeps answering, from memory, and recovers', () => {
  const { log, lines } = capture()
  const db = openDatabase(':memory:')
  const cache = new NarInfoCache(db, { positiveTtl: 10_000, negativeTtl: 1000, log })
  cache.putPresent('a'.repeat(32), 'h1', 'text-a', 'up')
  db.exec('PRAGMA query_only = ON') // every write now fails with SQLITE_READONLY
  cache.putPresent('b'.repeat(32), 'h2', 'text-b', 'up')
  cache.putAbsent('c'.repeat(32))
  assert.equal(cache.purgeExpired(), 0)
  assert.equal(lines.filter(l => l.msg === 'state write failed; serving without storing until it works again').length, 1)
  assert.equal(cache.get('a'.repeat(32))?.present, true, 'what was stored is still read')
  assert.deepEqual(cache.findByNarHash('h2'), [{ text: 'text-b', upstream: 'up' }], 'an unsaved narinfo still leads to its NAR')
  assert.equal(cache.get('c'.repeat(32))?.present, false)
  cache.putPresent('e'.repeat(32), 'h1', 'text-e', 'up')
  assert.deepEqual(cache.dropByNarHash('h1').sort(), ['e'.repeat(32)], 'a lost NAR drops its unsaved narinfos; the stored one stays while the disk refuses')
  assert.equal(cache.get('e'.repeat(32)), undefined)
  assert.deepEqual(cache.findByNarHash('h1'), [{ text: 'text-a', upstream: 'up' }])
  db.exec('PRAGMA query_only = OFF')
  cache.putPresent('d'.repeat(32), 'h4', 'text-d', 'up')
  assert.equal(lines.at(-1)!.msg, 'state writes work again')
  const stored = db.prepare('SELECT hash_part FROM narinfo ORDER BY hash_part').all().map(r => r.hash_part)
  assert.deepEqual(stored, ['a'.repeat(32), 'd'.repeat(32)])
})
