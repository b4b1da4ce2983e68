/**
 * An HTTP proxy named by `http_proxy` or `https_proxy`, as Nix's curl honours them: narswarm
 * reaches its upstream through it, and directly when `no_proxy` names the upstream's host. First a
 * small forwarding server of the test's own that counts what it forwarded; then tinyproxy, a real
 * proxy, tunnelling HTTPS to an upstream whose certificate narswarm checks end to end.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, request, type Server } from 'node:http'
import { once } from 'node:events'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { certificatesSkip, makeCertificates } from '../helpers/certificates.ts'
import { freePort, waitForPort } from '../helpers/net.ts'
import { findBinary } from '../../src/nix/compression.ts'
import type { CacheEntry } from '../helpers/signed-cache.ts'

/** The NAR of `entry` fetched through a narswarm whose upstream is `upstream`, with `env` added. */
async function fetchThrough (upstream: string, entry: CacheEntry, env: NodeJS.ProcessEnv): Promise<Buffer> {
  const narswarm = await startNarswarm(['--upstream', upstream],
    { env: { HTTP_PROXY: undefined, HTTPS_PROXY: undefined, NO_PROXY: undefined, http_proxy: undefined, https_proxy: undefined, ...env } })
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

  const spec = (): string => `${upstream.url}?trusted-public-keys=${publicKey}`

  test('http_proxy: narinfo and NAR go through the proxy', async () => {
    forwarded.length = 0
    assert.deepEqual(await fetchThrough(spec(), entry, { http_proxy: proxyUrl, no_proxy: '' }), entry.nar)
    assert.ok(forwarded.some(u => u === `${upstream.url}/${entry.hashPart}.narinfo`), forwarded.join(' '))
    assert.ok(forwarded.some(u => u.startsWith(`${upstream.url}/nar/`) && u.endsWith('.nar.xz')), forwarded.join(' '))
  })

  test('no_proxy naming the upstream\'s host: straight to it', async () => {
    forwarded.length = 0
    assert.deepEqual(await fetchThrough(spec(), entry, { http_proxy: proxyUrl, no_proxy: '127.0.0.1' }), entry.nar)
    assert.deepEqual(forwarded, [])
  })
})

const TINYPROXY = findBinary('tinyproxy')

describe('a real proxy: tinyproxy tunnels HTTPS to the upstream', { skip: TINYPROXY === false ? 'tinyproxy is not installed (apt-get install tinyproxy)' : certificatesSkip }, () => {
  let dir: string
  let upstream: CacheServer
  let publicKey: string
  let tinyproxy: ChildProcess
  let proxyUrl: string
  let proxyLog = ''
  let ca: string
  const entry = makeEntry('behind-tinyproxy')

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-tinyproxy-'))
    const certs = makeCertificates(dir)
    ca = certs.ca
    ;({ publicKey } = await writeSignedCache(join(dir, 'cache'), [entry], undefined, 'zstd'))
    upstream = await startCacheServer(join(dir, 'cache'), { tls: certs.tls })
    const port = await freePort()
    // No ConnectPort line: tunnels to any port (the upstream's is a free one).
    await writeFile(join(dir, 'tinyproxy.conf'), [
      ...(process.getuid?.() === 0 ? ['User nobody', 'Group nogroup'] : []),
      `Port ${port}`, 'Listen 127.0.0.1', 'Allow 127.0.0.1', 'Timeout 60', 'LogLevel Connect', ''].join('\n'))
    tinyproxy = spawn(TINYPROXY as string, ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'pipe', 'pipe'] })
    for (const out of [tinyproxy.stdout!, tinyproxy.stderr!]) out.on('data', (text: Buffer) => { proxyLog += text.toString() })
    await waitForPort(port)
    proxyUrl = `http://127.0.0.1:${port}`
    await mkdir(join(dir, 'no-certs'))
  })
  after(async () => {
    tinyproxy?.kill()
    await upstream?.close()
    await rm(dir, { recursive: true, force: true })
  })

  test('https_proxy: the upstream is reached through a CONNECT tunnel, its certificate checked by narswarm', async () => {
    const nar = await fetchThrough(`${upstream.url}?trusted-public-keys=${publicKey}`, entry, {
      https_proxy: proxyUrl, no_proxy: '',
      // Only the test's authority is trusted: the certificate is checked at the far end of the tunnel.
      NODE_EXTRA_CA_CERTS: undefined, SSL_CERT_FILE: ca, SSL_CERT_DIR: join(dir, 'no-certs'), NIX_SSL_CERT_FILE: undefined
    })
    assert.ok(nar.equals(entry.nar))
    assert.match(proxyLog, new RegExp(`CONNECT ${upstream.url.slice('https://'.length).replace(/\./g, '\\.')} `), proxyLog)
  })
})
