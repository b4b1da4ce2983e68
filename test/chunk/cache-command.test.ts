import { test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { buildClosure, copyTo, hashPartOf } from '../helpers/closure.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'
import { runNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { stateDatabase } from '../../src/util/sqlite.ts'

test('narswarm cache: import a Nix-written cache, stats, pin a closure, verify, gc, import local paths, clear', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const closure = await buildClosure(nix, { withBig: false })
    const cacheDir = tempDir()
    await copyTo(nix, closure, cacheDir, 'xz')
    const state = tempDir()
    const cache = async (...args: string[]) => await runNarswarm(['cache', ...args, '--state-dir', state], { env: nix.env })

    const usage = await cache('import')
    assert.equal(usage.code, 2)
    assert.match(usage.stderr, /needs a binary cache/)
    assert.equal((await cache('frobnicate')).code, 2)

    const untrusted = await cache('import', `file://${cacheDir}`, '--trusted-public-keys', 'other-1:9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5Vs=')
    assert.equal(untrusted.code, 1)
    // Only the text path, whose content address reproduces its store path, needs no signature.
    assert.match(untrusted.stdout, new RegExp(`imported 1 NARs .*, ${closure.paths.length - 1} failed`))
    assert.match(untrusted.stdout, /no valid signature by a trusted key/)

    const imported = await cache('import', `file://${cacheDir}`, '--trusted-public-keys', closure.publicKey)
    assert.equal(imported.code, 0, imported.stderr + imported.stdout)
    assert.match(imported.stdout, new RegExp(`imported ${closure.paths.length - 1} NARs .*, 1 already present, 0 failed`))
    const again = await cache('import', cacheDir, '--trusted-public-keys', closure.publicKey)
    assert.match(again.stdout, new RegExp(`imported 0 NARs \\(0 B\\), ${closure.paths.length} already present`))

    const db = new DatabaseSync(stateDatabase(state))
    const row = db.prepare('SELECT text FROM narinfo WHERE hash_part = ?').get(hashPartOf(closure.top)) as { text: string } | undefined
    assert.match(row?.text ?? '', /Sig: narswarm-test-/, 'the signed narinfo is in the narinfo cache')
    db.close()

    const stats = await cache('stats')
    assert.equal(stats.code, 0)
    assert.match(stats.stdout, new RegExp(`^NARs +${closure.paths.length}$`, 'm'))
    assert.match(stats.stdout, /^dedup ratio +\d/m)

    const pinned = await cache('pin', closure.top, '--closure')
    assert.equal(pinned.code, 0, pinned.stdout)
    assert.match(pinned.stdout, new RegExp(`pinned ${closure.paths.length} of ${closure.paths.length} paths`))
    assert.match((await cache('stats')).stdout, new RegExp(`\\(${closure.paths.length} pinned\\)`))
    // Pinned NARs survive a gc with a cap of nothing.
    await cache('gc', '--cache-size', '0')
    assert.match((await cache('stats')).stdout, new RegExp(`^NARs +${closure.paths.length} `, 'm'))
    assert.equal((await cache('unpin', closure.top)).code, 0)
    const gc = await cache('gc', '--cache-size', '0')
    assert.match(gc.stdout, /evicted 1 NARs/)
    assert.equal((await cache('pin', closure.top)).code, 1, 'no longer in the store')

    const verify = await cache('verify')
    assert.equal(verify.code, 0)
    assert.match(verify.stdout, /verified \d+ chunks: 0 bad/)

    const local = await cache('import', '--local', closure.top)
    assert.equal(local.code, 0, local.stderr + local.stdout)
    assert.match(local.stdout, /imported 1 NARs/)

    // A named path brings its closure with --closure; a NAR that fails its NarHash fails alone.
    const narUrl = (path: string): string => /^URL: (.*)$/m.exec(readFileSync(join(cacheDir, `${hashPartOf(path)}.narinfo`), 'utf8'))![1]!
    copyFileSync(join(cacheDir, narUrl(closure.top)), join(cacheDir, narUrl(closure.tree)))
    const partial = await runNarswarm(['cache', 'import', `file://${cacheDir}`, closure.top, '--closure', '--state-dir', tempDir(), '--trusted-public-keys', closure.publicKey], { env: nix.env })
    assert.equal(partial.code, 1, partial.stderr + partial.stdout)
    assert.match(partial.stdout, new RegExp(`^failed ${closure.tree}:`, 'm'))
    assert.match(partial.stdout, new RegExp(`imported ${closure.paths.length - 1} NARs .*, 0 already present, 1 failed`))

    assert.equal((await cache('clear')).code, 0)
    assert.match((await cache('stats')).stdout, /^NARs +0$/m)
  } finally {
    await nix.cleanup()
  }
})
