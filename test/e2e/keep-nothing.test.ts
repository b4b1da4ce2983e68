/**
 * `cache-size = 0` with the real Nix: a node that keeps nothing relays every NAR of a Nix-written
 * cache, verified, and writes none of it into its chunk store — it used to ingest each NAR and
 * evict it at once, the whole cost of storing for nothing kept. A second substitution of the same
 * closure goes to the upstream again.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { servedClosure, type Closure } from '../helpers/closure.ts'
import type { CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'

describe('cache-size 0', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let upstream: CacheServer
  let narswarm: NarswarmProcess

  before(async () => {
    nix = await makeNixEnv()
    ;({ closure, upstream } = await servedClosure(nix))
    narswarm = await startNarswarm(['--cache-size', '0', '--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
  })
  after(async () => {
    const code = await narswarm?.stop()
    await upstream?.close()
    await nix?.cleanup()
    assert.equal(code, 0)
  })

  test('every NAR is relayed, verified, each time; no chunk reaches the disk', async () => {
    for (const round of ['a', 'b']) {
      const store = `local?root=${join(nix.dir, `store-${round}`)}`
      await nix.run('nix-store', ['--store', store, '--realise', closure.top,
        '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey, '--option', 'require-sigs', 'true'])
      await nix.run('nix', ['store', 'verify', '--store', store, '--no-trust', '--trusted-public-keys', closure.publicKey, '-r', closure.top])
    }
    const narRequests = upstream.requests.filter(r => r.startsWith('GET /nar/')).length
    assert.equal(narRequests, 2 * closure.paths.length, 'each substitution fetched every NAR from the upstream')
    const files = (await readdir(join(narswarm.stateDir, 'chunks'), { recursive: true })).filter(f => /[0-9a-f]{64}$|\.pack$/.test(f))
    assert.deepEqual(files, [])
    assert.ok(!narswarm.logs.some(l => l.msg === 'NAR committed to the store'))
  })
})
