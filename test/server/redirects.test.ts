/**
 * Upstreams that redirect, as caches behind object stores and CDNs do (a NAR answered with 302 to
 * a signed URL elsewhere): narswarm follows up to 10 redirects, sends an upstream's credentials to
 * its own origin only, and fails a redirect loop as a failure of the upstream (502), never as
 * absence.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

describe('upstreams that redirect', () => {
  let dir: string
  let publicKey: string
  let objects: CacheServer
  const entry = makeEntry('redirected')
  const authorization = `Basic ${Buffer.from('u:p').toString('base64')}`

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-redirect-'))
    ;({ publicKey } = await writeSignedCache(dir, [entry], undefined, 'zstd'))
    objects = await startCacheServer(dir)
  })
  after(async () => {
    await objects?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const through = async (upstream: string): Promise<{ narinfo: number, nar?: Buffer, narStatus?: number }> => {
    const narswarm = await startNarswarm(['--upstream', `${upstream}?trusted-public-keys=${publicKey}`])
    try {
      const res = await fetch(`${narswarm.url}/${entry.hashPart}.narinfo`)
      const text = await res.text()
      if (res.status !== 200) return { narinfo: res.status }
      const nar = await fetch(`${narswarm.url}/${/^URL: (.*)$/m.exec(text)![1]}`)
      return { narinfo: 200, narStatus: nar.status, nar: Buffer.from(await nar.arrayBuffer()) }
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  }

  test('NARs redirected (302, then 307) to another host; the credentials stay with the upstream', async () => {
    const hop = await startCacheServer(dir)
    hop.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'redirect', status: 307, to: p => `${objects.url}${p}` } })
    const upstream = await startCacheServer(dir, { authorization })
    upstream.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'redirect', to: p => `${hop.url}${p}` } })
    try {
      const before = objects.requests.length
      const withUser = new URL(upstream.url)
      withUser.username = 'u'
      withUser.password = 'p'
      const got = await through(withUser.toString().replace(/\/$/, ''))
      assert.equal(got.narStatus, 200)
      assert.ok(got.nar!.equals(entry.nar))
      assert.ok(objects.requests.slice(before).some(r => r.startsWith('GET /nar/')), 'the NAR came from the object store')
      assert.deepEqual([...hop.authorized, ...objects.authorized], [], 'no credentials past the upstream')
    } finally {
      await hop.close()
      await upstream.close()
    }
  })

  test('a redirect loop, and more than 10 redirects: a failure of the upstream (502), not absence', async () => {
    const upstream = await startCacheServer(dir)
    upstream.faults.push({ match: p => p.endsWith('.narinfo'), fault: { kind: 'redirect', to: p => `${upstream.url}${p}` } })
    const chain = await startCacheServer(dir)
    chain.faults.push({ match: p => p.endsWith('.narinfo') || p.startsWith('/hop'), fault: { kind: 'redirect', to: p => `${chain.url}/hop${p}` } })
    try {
      assert.equal((await through(upstream.url)).narinfo, 502)
      assert.equal((await through(chain.url)).narinfo, 502)
      assert.ok(chain.requests.length <= 12, `${chain.requests.length} requests: the chain was not followed for ever`)
    } finally {
      await upstream.close()
      await chain.close()
    }
  })
})
