/**
 * `cache-size = 0`: a node that keeps nothing relays every NAR, verified, and writes none of it
 * into its chunk store — it used to ingest each NAR and evict it at once, the whole cost of
 * storing for nothing kept.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'

const entry = makeEntry('kept-nowhere', randomBytes(600_000))
let dir: string
let upstream: CacheServer
let narswarm: NarswarmProcess

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'narswarm-keep-nothing-'))
  const { publicKey } = await writeSignedCache(dir, [entry], undefined, 'xz')
  upstream = await startCacheServer(dir)
  narswarm = await startNarswarm(['--cache-size', '0', '--upstream', `${upstream.url}?trusted-public-keys=${publicKey}`])
})
after(async () => {
  const code = await narswarm?.stop()
  await upstream?.close()
  await rm(dir, { recursive: true, force: true })
  assert.equal(code, 0)
})

test('cache-size 0: every request is relayed, verified, and no chunk reaches the disk', async () => {
  const narinfo = await (await fetch(`${narswarm.url}/${entry.hashPart}.narinfo`)).text()
  const url = /^URL: (.*)$/m.exec(narinfo)![1]!
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${narswarm.url}/${url}`)
    assert.equal(res.status, 200)
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(entry.nar))
  }
  assert.equal(upstream.requests.filter(r => r.startsWith('GET /nar/')).length, 2, 'each request went to the upstream')
  const files = (await readdir(join(narswarm.stateDir, 'chunks'), { recursive: true })).filter(f => /[0-9a-f]{64}$/.test(f))
  assert.deepEqual(files, [])
  assert.ok(!narswarm.logs.some(l => l.msg === 'NAR committed to the store'))
})
