/**
 * An HTTP proxy named by `http_proxy`, as Nix's curl honours it: narswarm reaches its upstream
 * through it, and directly when `no_proxy` names the upstream's host. The proxy is a small
 * forwarding server of the test's own that counts what it forwarded.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, request, type Server } from 'node:http'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

describe('an HTTP proxy from the environment', () => {
  let dir: string
  let upstream: CacheServer
  let publicKey: string
  let proxy: Server
  let proxyUrl: string
  const forwarded: string[] = []
  const entry = makeEntry('behind-a-proxy')

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-proxy-'))
    ;({ publicKey } = await writeSignedCache(dir, [entry], undefined, 'xz'))
    upstream = await startCacheServer(dir)
    // A forward proxy: requests arrive in absolute form (`GET http://host:port/path`).
    proxy = createServer((req, res) => {
      forwarded.push(req.url ?? '')
      const out = request(req.url!, { method: req.method, headers: req.headers }, answer => {
        res.writeHead(answer.statusCode!, answer.headers)
        answer.pipe(res)
      })
      out.on('error', () => res.destroy())
      req.pipe(out)
    })
    proxy.listen(0, '127.0.0.1')
    await once(proxy, 'listening')
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
  })
  after(async () => {
    await upstream?.close()
    proxy?.closeAllConnections()
    proxy?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const fetchThrough = async (env: NodeJS.ProcessEnv): Promise<Buffer> => {
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${publicKey}`],
      { env: { HTTP_PROXY: undefined, HTTPS_PROXY: undefined, NO_PROXY: undefined, https_proxy: undefined, ...env } })
    try {
      const narinfo = await fetch(`${narswarm.url}/${entry.hashPart}.narinfo`)
      assert.equal(narinfo.status, 200)
      const nar = await fetch(`${narswarm.url}/${/^URL: (.*)$/m.exec(await narinfo.text())![1]}`)
      assert.equal(nar.status, 200)
      return Buffer.from(await nar.arrayBuffer())
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  }

  test('http_proxy: narinfo and NAR go through the proxy', async () => {
    forwarded.length = 0
    assert.deepEqual(await fetchThrough({ http_proxy: proxyUrl, no_proxy: '' }), entry.nar)
    assert.ok(forwarded.some(u => u === `${upstream.url}/${entry.hashPart}.narinfo`), forwarded.join(' '))
    assert.ok(forwarded.some(u => u.startsWith(`${upstream.url}/nar/`) && u.endsWith('.nar.xz')), forwarded.join(' '))
  })

  test('no_proxy naming the upstream\'s host: straight to it', async () => {
    forwarded.length = 0
    assert.deepEqual(await fetchThrough({ http_proxy: proxyUrl, no_proxy: '127.0.0.1' }), entry.nar)
    assert.deepEqual(forwarded, [])
  })
})
