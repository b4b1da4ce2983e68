/**
 * A full state disk is not an outage: narswarm's state directory on a small tmpfs, filled to the
 * last byte while narswarm runs; the real Nix still substitutes a closure through narswarm from a
 * healthy upstream, narswarm says why it stores nothing (once), and stores again by itself once
 * space is freed. Skipped with the reason where a tmpfs cannot be mounted (not root, no mount).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { closeSync, openSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { DatabaseSync } from 'node:sqlite'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { stateDatabase } from '../../src/util/sqlite.ts'

const run = promisify(execFile)

/** Mounts a tmpfs of `size` at a new directory; the reason why not, as a string, where it cannot. */
async function mountTmpfs (size: string): Promise<string | { dir: string, unmount: () => Promise<void> }> {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root'
  const dir = tempDir('narswarm-full-')
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  } catch (err) {
    return `cannot mount a tmpfs here: ${(err as Error).message.split('\n')[0]}`
  }
  return { dir, unmount: async () => { await run('umount', ['-l', dir]) } }
}

/** Writes to `file` until the file system says ENOSPC. */
function fill (file: string): void {
  const fd = openSync(file, 'w')
  const block = Buffer.alloc(64 * 1024, 1)
  try {
    for (;;) writeSync(fd, block)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
  // The last partial block: byte by byte until nothing fits.
  const tail = openSync(file, 'a')
  try { for (;;) writeSync(tail, block.subarray(0, 512)) } catch {} finally { closeSync(tail) }
}

describe('a full state disk', { skip: nixSkip() }, async () => {
  const mounted = await mountTmpfs('4m')
  const skip = typeof mounted === 'string' ? mounted : false
  let nix: NixEnv
  let closure: Closure
  let upstream: CacheServer

  before(async () => {
    if (skip !== false) return
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: false })
    const dir = join(nix.dir, 'cache')
    await copyTo(nix, closure, dir, 'zstd')
    upstream = await startCacheServer(dir)
  })
  after(async () => {
    await upstream?.close()
    await nix?.cleanup()
    if (typeof mounted !== 'string') await mounted.unmount()
  })

  test('Nix substitutes through narswarm while nothing can be stored, also after a restart; storing resumes when space returns', { skip }, async () => {
    const { dir } = mounted as { dir: string }
    const stateDir = join(dir, 'state')
    const args = ['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`, '--state-dir', stateDir]
    const filler = join(dir, 'filler')
    const first = await startNarswarm(args)
    try {
      fill(filler)
      const store = `local?root=${join(nix.dir, 'store')}`
      const result = await nix.tryRun('nix-store', ['--store', store, '--realise', closure.top,
        '--option', 'substituters', first.url, '--option', 'trusted-public-keys', closure.publicKey])
      assert.equal(result.code, 0, `Nix substitutes the closure: ${result.stderr}`)
      for (const path of closure.paths) {
        assert.equal((await nix.tryRun('nix-store', ['--store', store, '--check-validity', path])).code, 0, path)
      }
      const failed = await first.waitForLog(l => l.msg === 'state write failed; serving without storing until it works again')
      assert.match(String(failed.err), /SQLITE_FULL|ENOSPC/)
      const states = first.logs.filter(l => l.msg.startsWith('state write')).map(l => l.state)
      assert.equal(new Set(states).size, states.length, 'one line per kind of state, not one per request')
      assert.equal(first.logs.filter(l => l.level >= 50).length, 0, 'no request failed')
    } finally {
      assert.equal(await first.stop(), 0)
    }

    // Restarted while the disk is still full: it starts, and answers from the upstream.
    const second = await startNarswarm(args)
    try {
      assert.equal((await fetch(`${second.url}/${closure.paths[0]!.slice(11, 43)}.narinfo`)).status, 200)
      await second.waitForLog(l => l.msg === 'state write failed; serving without storing until it works again')
      rmSync(filler)
      assert.equal((await fetch(`${second.url}/${'0'.repeat(32)}.narinfo`)).status, 404)
      await second.waitForLog(l => l.msg === 'state writes work again')
    } finally {
      rmSync(filler, { force: true })
      assert.equal(await second.stop(), 0)
    }
    // stop() removed its own temporary directory, not this one: the answer given after recovery is on disk.
    const db = new DatabaseSync(stateDatabase(stateDir), { readOnly: true })
    try {
      assert.equal(db.prepare('SELECT present FROM narinfo WHERE hash_part = ?').get('0'.repeat(32))?.present, 0)
    } finally {
      db.close()
    }
  })

  test('a state directory on a read-only file system: narswarm starts with its state in memory and serves', { skip }, async () => {
    const { dir } = mounted as { dir: string }
    await run('mount', ['-o', 'remount,ro', dir])
    try {
      // The default sqlite: index lives in the state directory too; this one lives elsewhere.
      const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`,
        '--state-dir', join(dir, 'new-state'), '--mapper', `folder://${tempDir()}`])
      try {
        await narswarm.waitForLog(l => l.msg === 'state database unusable; narinfos are kept in memory only until restart')
        const res = await fetch(`${narswarm.url}/${closure.tree.slice(11, 43)}.narinfo`)
        assert.equal(res.status, 200)
        const url = /^URL: (.*)$/m.exec(await res.text())![1]!
        assert.equal((await fetch(`${narswarm.url}/${url}`)).status, 200)
      } finally {
        assert.equal(await narswarm.stop(), 0)
      }
    } finally {
      await run('mount', ['-o', 'remount,rw', dir])
    }
  })
})
