/**
 * The substituter over real HTTP with several upstreams (static servers on 127.0.0.1): priorities,
 * fallback from a hostile upstream to a good one, Range resumption, HEAD, and the headers Nix
 * relies on. The Nix client itself is exercised in test/e2e.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateSecretKey } from '../../src/nix/signature.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'

describe('substituter with several upstreams', () => {
  let dir: string
  let good: CacheServer
  let evil: CacheServer
  let other: CacheServer
  let key: ReturnType<typeof generateSecretKey>
  let otherKey: ReturnType<typeof generateSecretKey>
  const shared = makeEntry('shared')
  const onlyOther = makeEntry('only-other')

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-sub-'))
    key = generateSecretKey('test-1')
    otherKey = generateSecretKey('other-1')
    await writeSignedCache(join(dir, 'good'), [shared], key, 'zstd')
    await writeSignedCache(join(dir, 'evil'), [shared], key, 'none')
    await writeSignedCache(join(dir, 'other'), [shared, onlyOther], otherKey, 'xz')
    good = await startCacheServer(join(dir, 'good'))
    evil = await startCacheServer(join(dir, 'evil'))
    other = await startCacheServer(join(dir, 'other'))
    evil.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'flip', offset: 1000 } })
  })
  after(async () => {
    await Promise.all([good.close(), evil.close(), other.close()])
    await rm(dir, { recursive: true, force: true })
  })

  const up = (s: CacheServer, k: { public: string }, priority: number) => `${s.url}?priority=${priority}&trusted-public-keys=${k.public}`
  const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

  test('the best-priority upstream wins; a hostile one is dropped and the retry succeeds from the next', async () => {
    const n = await startNarswarm(['--upstream', up(evil, key, 10), '--upstream', up(good, key, 20)])
    try {
      const info = await fetch(`${n.url}/${shared.hashPart}.narinfo`)
      assert.equal(info.status, 200)
      const text = await info.text()
      assert.match(text, new RegExp(`^URL: nar/[0-9a-df-np-sv-z]{52}\\.nar\\?hash=${shared.hashPart}$`, 'm'))
      assert.match(text, /^Compression: none$/m)
      const url = /^URL: (.*)$/m.exec(text)![1]!
      assert.equal((await n.waitForLog(l => l.msg === 'narinfo fetched')).upstream, evil.url, 'priority 10 beats 20')

      // First attempt: the evil upstream's bytes fail verification; no complete body arrives. (A
      // NAR this small is verified in full before anything is sent, so the connection just closes.)
      await assert.rejects(async () => { await (await fetch(`${n.url}/${url}`)).arrayBuffer() })
      await n.waitForLog(l => l.msg.startsWith('NAR failed verification') && l.source === evil.url)

      // The retry comes from the good upstream, and so does a resumed (Range) one.
      const second = await fetch(`${n.url}/${url}`)
      assert.equal(sha(new Uint8Array(await second.arrayBuffer())), sha(shared.nar))
      const resumed = await fetch(`${n.url}/${url}`, { headers: { range: 'bytes=1000-' } })
      assert.equal(resumed.status, 206)
      assert.equal(resumed.headers.get('content-range'), `bytes 1000-${shared.nar.length - 1}/${shared.nar.length}`)
      assert.equal(sha(new Uint8Array(await resumed.arrayBuffer())), sha(shared.nar.subarray(1000)))
      assert.ok(good.requests.some(r => r.startsWith('GET /nar/')), 'the good upstream delivered')
    } finally {
      await n.stop()
    }
  })

  test('an upstream whose key is not trusted for it does not count; another upstream supplies the path', async () => {
    // `other` signs with otherKey; configured with key → its narinfos are rejected.
    const n = await startNarswarm(['--upstream', up(other, key, 10), '--upstream', up(good, key, 20)])
    try {
      assert.equal((await fetch(`${n.url}/${shared.hashPart}.narinfo`)).status, 200)
      assert.equal((await fetch(`${n.url}/${onlyOther.hashPart}.narinfo`)).status, 404)
      await n.waitForLog(l => l.msg.startsWith('narinfo rejected') && l.upstream === other.url)
    } finally {
      await n.stop()
    }
  })

  test('HEAD, nix-cache-info, headers, 416 and absent paths', async () => {
    const n = await startNarswarm(['--upstream', up(other, otherKey, 10), '--priority', '30'])
    try {
      const info = await fetch(`${n.url}/nix-cache-info`)
      assert.equal(await info.text(), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n')
      assert.equal(info.headers.get('content-type'), 'text/x-nix-cache-info')
      const head = await fetch(`${n.url}/${onlyOther.hashPart}.narinfo`, { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(head.headers.get('content-type'), 'text/x-nix-narinfo')
      const text = await (await fetch(`${n.url}/${onlyOther.hashPart}.narinfo`)).text()
      assert.equal(Number(head.headers.get('content-length')), Buffer.byteLength(text))
      const url = /^URL: (.*)$/m.exec(text)![1]!
      const narHead = await fetch(`${n.url}/${url}`, { method: 'HEAD' })
      assert.equal(narHead.status, 200)
      assert.equal(Number(narHead.headers.get('content-length')), onlyOther.nar.length)
      assert.equal(narHead.headers.get('accept-ranges'), 'bytes')
      assert.equal(narHead.headers.get('content-encoding'), null)
      const nar = await fetch(`${n.url}/${url}`)
      assert.equal(sha(new Uint8Array(await nar.arrayBuffer())), sha(onlyOther.nar), 'xz upstream decompressed and verified')
      const past = await fetch(`${n.url}/${url}`, { headers: { range: `bytes=${onlyOther.nar.length}-` } })
      assert.equal(past.status, 416)
      assert.equal(past.headers.get('content-range'), `bytes */${onlyOther.nar.length}`)
      const absent = await fetch(`${n.url}/${'0'.repeat(32)}.narinfo`)
      assert.equal(absent.status, 404)
      assert.equal(absent.headers.get('cache-control'), 'no-store')
      const unknownNar = await fetch(`${n.url}/nar/${'0'.repeat(52)}.nar`)
      assert.equal(unknownNar.status, 404)
    } finally {
      await n.stop()
    }
  })

  test('narinfos survive a restart in the SQLite cache; answers are served while the upstream is down', async () => {
    const entry = makeEntry('persisted')
    const cacheDir = join(dir, 'persist')
    const k = generateSecretKey('persist-1')
    await writeSignedCache(cacheDir, [entry], k)
    const server = await startCacheServer(cacheDir)
    const stateDir = await mkdtemp(join(tmpdir(), 'narswarm-persist-'))
    const args = ['--upstream', `${server.url}?trusted-public-keys=${k.public}`, '--state-dir', stateDir]
    try {
      const a = await startNarswarm(args)
      assert.equal((await fetch(`${a.url}/${entry.hashPart}.narinfo`)).status, 200)
      assert.equal((await fetch(`${a.url}/${'1'.repeat(32)}.narinfo`)).status, 404)
      await a.stop()
      server.faults.push({ match: () => true, fault: { kind: 'status', status: 503 } })
      const b = await startNarswarm(args)
      try {
        assert.equal((await fetch(`${b.url}/${entry.hashPart}.narinfo`)).status, 200, 'positive entry from SQLite')
        assert.equal((await fetch(`${b.url}/${'1'.repeat(32)}.narinfo`)).status, 404, 'negative entry from SQLite')
        assert.equal((await fetch(`${b.url}/${'2'.repeat(32)}.narinfo`)).status, 502, 'unknown + upstream down = 502, not 404')
      } finally {
        await b.stop()
      }
    } finally {
      await server.close()
      await rm(stateDir, { recursive: true, force: true })
    }
  })
})
