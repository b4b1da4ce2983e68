import { describe, it, before, after, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { freePort } from '../helpers/net.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { MirrorBackend, MIRROR_DEFAULTS, plugin, type MirrorBackendInit } from '../../src/backend/mirror.ts'
import { ConfigError, UpstreamError } from '../../src/errors.ts'
import { collect, sha256Hex } from '../helpers/bytes.ts'


interface Site { dir: string, server: CacheServer }

async function startSite (): Promise<Site> {
  const dir = await mkdtemp(join(tmpdir(), 'mirror-'))
  await mkdir(join(dir, 'nar'))
  return { dir, server: await startCacheServer(dir) }
}

async function stopSite (site: Site): Promise<void> {
  await site.server.close()
  await rm(site.dir, { recursive: true, force: true })
}

/** Writes `bytes` into every site under a content-derived name; returns the relative path. */
async function seedAll (sites: Site[], bytes: Uint8Array): Promise<string> {
  const path = `nar/${sha256Hex(bytes)}.nar`
  for (const site of sites) await writeFile(join(site.dir, path), bytes)
  return path
}

/** A port on which nothing listens: connections are refused. */
async function deadUrl (): Promise<string> {
  return `http://127.0.0.1:${await freePort()}/`
}

function mirrorsOf (...urls: string[]): MirrorBackendInit {
  return { ...MIRROR_DEFAULTS, mirrors: urls.map(u => u.endsWith('/') ? u : `${u}/`), failures: 2, backoff: 3_600_000 }
}

describe('mirror backend spec', () => {
  it('parses two mirrors and defaults', () => {
    assert.deepEqual(plugin.parse(new URL('mirror+https://a.example/,https://b.example/cache')), {
      ...MIRROR_DEFAULTS, mirrors: ['https://a.example/', 'https://b.example/cache/']
    })
  })
  it('parses options that follow the list', () => {
    assert.deepEqual(plugin.parse(new URL('mirror+http://a.example/,https://b.example/,https://c.example/x/?timeout=10s&connect-timeout=500ms&stall-timeout=1m&failures=5&backoff=2m&connections=4')), {
      mirrors: ['http://a.example/', 'https://b.example/', 'https://c.example/x/'],
      connectTimeout: 500, timeout: 10_000, stallTimeout: 60_000, failures: 5, backoff: 120_000, connections: 4
    })
  })
  const invalid: Array<[string, RegExp]> = [
    ['mirror+https://a.example/', /two or more mirrors/],
    ['mirror+https://a.example/,ftp://b.example/', /is not http:\/\/ or https:\/\//],
    ['mirror+https://a.example/,not a url', /is not a URL/],
    ['mirror+https://a.example,https://b.example/', /end each mirror with '\/'/],
    ['mirror+https://a.example/,https://a.example', /listed twice/],
    ['mirror+https://a.example/,https://b.example/?timeout=soon', /timeout must be a duration/],
    ['mirror+https://a.example/,https://b.example/?timeout=0', /timeout must be more than 0/],
    ['mirror+https://a.example/,https://b.example/?retries=3', /unknown option 'retries'/],
    ['mirror+https://a.example/,https://b.example/?failures=0', /failures must be at least 1/],
    ['mirror+https://a.example/,https://b.example/?connections=many', /connections must be an integer/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('mirror backend', () => {
  let a: Site
  let b: Site
  let backend: MirrorBackend
  beforeEach(async () => {
    a = await startSite()
    b = await startSite()
    backend = new MirrorBackend(mirrorsOf(a.server.url, b.server.url))
  })
  afterEach(async () => { await backend.close(); await stopSite(a); await stopSite(b) })

  it('round robin alternates between the mirrors', async () => {
    const bytes = randomBytes(1000)
    const path = await seedAll([a, b], bytes)
    for (let i = 0; i < 10; i++) {
      const source = await backend.open({ url: path, compression: 'none' })
      assert.deepEqual(await collect(source!.body), bytes)
    }
    assert.equal(a.server.requests.length, 5)
    assert.equal(b.server.requests.length, 5)
  })

  it('an absolute URL under one mirror is fetched from either', async () => {
    const bytes = randomBytes(100)
    const path = await seedAll([a, b], bytes)
    for (let i = 0; i < 4; i++) {
      const source = await backend.open({ url: `${b.server.url}/${path}`, compression: 'xz' })
      assert.equal(source?.compression, 'xz')
      assert.equal(source?.fileSize, 100)
      assert.deepEqual(await collect(source!.body), bytes)
    }
    assert.equal(a.server.requests.length, 2)
    assert.equal(b.server.requests.length, 2)
  })

  it('a Content-Encoding comes off; the file size is not taken from the encoded length', async () => {
    const bytes = randomBytes(3000)
    const path = await seedAll([a, b], bytes)
    for (const site of [a, b]) site.server.faults.push({ match: () => true, fault: { kind: 'encode', codings: ['zstd', 'gzip'] } })
    const source = await backend.open({ url: path, compression: 'none' })
    assert.equal(source?.fileSize, undefined)
    assert.deepEqual(await collect(source!.body), bytes)
  })

  it('credentials in a mirror\'s URL are sent to that mirror only; locators match it without them', async () => {
    const bytes = randomBytes(2000)
    const path = await seedAll([a, b], bytes)
    await backend.close()
    const withUser = new URL(a.server.url)
    withUser.username = 'reader'
    withUser.password = 'p%40ss'
    backend = new MirrorBackend(mirrorsOf(withUser.toString(), b.server.url))
    for (let i = 0; i < 2; i++) assert.deepEqual(await collect((await backend.open({ url: `${a.server.url}/${path}`, compression: 'none' }))!.body), bytes)
    assert.deepEqual(a.server.authorized, [`/${path}`])
    assert.deepEqual(b.server.authorized, [])
    assert.equal(b.server.requests.length, 1)
    assert.ok(!backend.name.includes('p%40ss') && !backend.name.includes('reader'))
  })

  it('a URL under no mirror, or one that climbs out, is not this backend\'s', async () => {
    assert.equal(await backend.open({ url: 'https://elsewhere.example/nar/x.nar', compression: 'none' }), undefined)
    assert.equal(await backend.open({ url: '../x.nar', compression: 'none' }), undefined)
    assert.equal(a.server.requests.length + b.server.requests.length, 0)
  })

  it('a mirror answering 500 fails over to the other within the same open', async () => {
    const bytes = randomBytes(5000)
    const path = await seedAll([a, b], bytes)
    a.server.faults.push({ match: () => true, fault: { kind: 'status', status: 500 } })
    for (let i = 0; i < 4; i++) {
      const source = await backend.open({ url: path, compression: 'none' })
      assert.deepEqual(await collect(source!.body), bytes)
    }
    assert.equal(b.server.requests.length, 4)
    assert.ok(a.server.requests.length >= 1)
  })

  it('404 from every mirror is undefined, and not a failure', async () => {
    assert.equal(await backend.open({ url: 'nar/absent.nar', compression: 'none' }), undefined)
    assert.equal(a.server.requests.length, 1)
    assert.equal(b.server.requests.length, 1)
    assert.ok(backend.health().every(h => h.up && h.consecutiveFailures === 0))
  })

  it('404 on one mirror and 500 on the other is a failure, not absence', async () => {
    a.server.faults.push({ match: () => true, fault: { kind: 'status', status: 503 } })
    await assert.rejects(backend.open({ url: 'nar/absent.nar', compression: 'none' }), UpstreamError)
  })

  it('when every mirror is down, all are still tried', async () => {
    a.server.faults.push({ match: () => true, fault: { kind: 'status', status: 500 } })
    b.server.faults.push({ match: () => true, fault: { kind: 'status', status: 500 } })
    for (let i = 0; i < 2; i++) await assert.rejects(backend.open({ url: 'nar/x.nar', compression: 'none' }), UpstreamError)
    assert.ok(backend.health().every(h => !h.up))
    a.server.faults.length = 0
    const bytes = randomBytes(10)
    const path = await seedAll([a, b], bytes)
    assert.deepEqual(await collect((await backend.open({ url: path, compression: 'none' }))!.body), bytes)
    assert.equal(backend.health()[0]!.up, true)
    assert.equal(backend.health()[1]!.up, false)
  })

  it('every mirror failing is an UpstreamError naming them', async () => {
    a.server.faults.push({ match: () => true, fault: { kind: 'status', status: 500 } })
    b.server.faults.push({ match: () => true, fault: { kind: 'status', status: 502 } })
    await assert.rejects(backend.open({ url: 'nar/x.nar', compression: 'none' }), (err: unknown) =>
      err instanceof UpstreamError && /answered 500/.test(err.message) && /answered 502/.test(err.message))
  })

  it('a stalled mirror times out and the other serves', async () => {
    await backend.close()
    backend = new MirrorBackend({ ...mirrorsOf(a.server.url, b.server.url), timeout: 200 })
    const bytes = randomBytes(100)
    const path = await seedAll([a, b], bytes)
    a.server.faults.push({ match: () => true, fault: { kind: 'hang' } })
    for (let i = 0; i < 2; i++) {
      const source = await backend.open({ url: path, compression: 'none' })
      assert.deepEqual(await collect(source!.body), bytes)
    }
    assert.match(backend.health()[0]!.lastError!, /UND_ERR_HEADERS_TIMEOUT/)
  })
})

describe('mirror backend with a dead mirror', () => {
  let live: Site
  before(async () => { live = await startSite() })
  after(async () => { await stopSite(live) })

  it('opens succeed from the live mirror and the dead one is marked down', async () => {
    let now = 1_000_000
    const dead = await deadUrl()
    const backend = new MirrorBackend(mirrorsOf(dead, live.server.url), { now: () => now })
    try {
      const bytes = randomBytes(3000)
      const path = await seedAll([live], bytes)
      for (let i = 0; i < 6; i++) {
        const source = await backend.open({ url: path, compression: 'none' })
        assert.deepEqual(await collect(source!.body), bytes)
      }
      const [deadHealth, liveHealth] = backend.health()
      assert.equal(deadHealth!.up, false)
      assert.equal(deadHealth!.consecutiveFailures, 2)
      assert.match(deadHealth!.lastError!, /ECONNREFUSED/)
      assert.equal(liveHealth!.up, true)
      // Down: skipped while the other mirror is up.
      const triedDead = deadHealth!.requests
      for (let i = 0; i < 4; i++) await collect((await backend.open({ url: path, compression: 'none' }))!.body)
      assert.equal(backend.health()[0]!.requests, triedDead)
      // While it is down, the live mirror's 404 does not prove absence.
      await assert.rejects(backend.open({ url: 'nar/absent.nar', compression: 'none' }), (err: unknown) =>
        err instanceof UpstreamError && /down/.test(err.message))
      assert.equal(backend.health()[0]!.requests, triedDead)
      // After the back-off it is tried again.
      now += 3_600_001
      assert.equal(backend.health()[0]!.up, true)
      for (let i = 0; i < 2; i++) await collect((await backend.open({ url: path, compression: 'none' }))!.body)
      assert.ok(backend.health()[0]!.requests > triedDead)
    } finally {
      await backend.close()
    }
  })
})
