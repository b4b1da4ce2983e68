/** Telling whether a process still runs when its pid may have been reused. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { processTag, runs, startTime } from '../../src/util/process.ts'

test('a process tag names this process; the same pid started at another time, or a pid that is gone, does not run', () => {
  const tag = processTag()
  assert.match(tag, new RegExp(`^${process.pid}-\\d+$`))
  assert.ok(runs(tag))
  assert.ok(!runs(`${process.pid}-${Number(startTime(process.pid)) + 1}`), 'the pid reused by a later process')
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' })
  assert.ok(!runs(`${child.stdout}-`), 'a process that exited')
  assert.ok(!runs('not a tag'))
})
