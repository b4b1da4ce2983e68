/**
 * The NAR route over real HTTP, with narswarm as a process and static upstreams and mirrors on
 * 127.0.0.1: one upstream fetch for 50 concurrent requests; a NAR over 512 KiB whose last chunk
 * is wrong (from an upstream: never a complete body; from a mirror: never a byte, and the good
 * upstream's copy on the first request); `bytes=N-M` ranges; the store serving a NAR whose
 * narinfo expired; URLs that find their path again through `?hash=`; a NAR that every source lost
 * taking its narinfo out of the cache; zstd for Nix and Lix once the store holds a NAR.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { DatabaseSync } from 'node:sqlite'
import { writeFile } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { generateSecretKey } from '../../src/nix/signature.ts'
import { findBinary } from '../../src/nix/compression.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { makeEntry, writeSignedCache, type CacheEntry } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'
import { stateDatabase } from '../../src/util/sqlite.ts'

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')
// What Nix 2.8 and Lix send (Lix leaves out the space).
const NIX_2_8 = 'curl/7.88.1 Nix/2.8.0'
const LIX = 'curl/8.11.1Nix/2.91.1'
const noZstd = findBinary('zstd') === false ? 'the zstd program is not on PATH (.ci/run installs it)' : false
function unzstd (stream: Uint8Array): Uint8Array {
  const r = spawnSync('zstd', ['-dc'], { input: stream, maxBuffer: 64 << 20 })
  assert.equal(r.status, 0, String(r.stderr))
  return r.stdout
}

describe('serving NARs', () => {
  const dir = tempDir('narswarm-nars-')
  const key = generateSecretKey('nars-1')
  // Above 512 KiB, and not a multiple of any chunk size.
  const big = makeEntry('big', randomBytes(1024 * 1024 + 12345))
  const other = makeEntry('other', randomBytes(700_000))
  const lost = makeEntry('lost', randomBytes(10_000))
  // Compressible, then random: the store keeps compressed and raw chunks of it.
  const text = makeEntry('text', Buffer.concat([Buffer.from(Array.from({ length: 30_000 }, (_, i) => `line ${i} of a text ${i % 7}\n`).join('')), randomBytes(300_000)]))
  let xz: CacheServer
  let plain: CacheServer

  before(async () => {
    await writeSignedCache(join(dir, 'xz'), [big, other, lost, text], key, 'xz')
    await writeSignedCache(join(dir, 'none'), [big, other, lost, text], key, 'none')
    xz = await startCacheServer(join(dir, 'xz'))
    plain = await startCacheServer(join(dir, 'none'))
  })
  after(async () => { await Promise.all([xz.close(), plain.close()]) })

  const upstream = (s: CacheServer): string => `${s.url}?trusted-public-keys=${key.public}`
  const narUrl = async (n: NarswarmProcess, e: CacheEntry): Promise<string> => {
    const text = await (await fetch(`${n.url}/${e.hashPart}.narinfo`)).text()
    return `${n.url}/${/^URL: (.*)$/m.exec(text)![1]!}`
  }
  const narGets = (s: CacheServer): number => s.requests.filter(r => r.startsWith('GET /nar/')).length

  test('50 concurrent requests for one NAR make one upstream fetch; later ones and ranges come from the store', async () => {
    const n = await startNarswarm(['--upstream', upstream(xz)])
    try {
      const url = await narUrl(n, big)
      const before = narGets(xz)
      const bodies = await Promise.all(Array.from({ length: 50 }, async () => new Uint8Array(await (await fetch(url)).arrayBuffer())))
      for (const b of bodies) assert.equal(sha(b), sha(big.nar))
      assert.equal(narGets(xz) - before, 1, 'one upstream fetch')
      await n.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === big.storePath)
      const again = await fetch(url)
      assert.equal(sha(new Uint8Array(await again.arrayBuffer())), sha(big.nar))
      assert.equal(narGets(xz) - before, 1, 'no second upstream fetch')
      await n.waitForLog(l => l.msg === 'NAR served' && l.source === 'store' && l.storePath === big.storePath)

      // bytes=N-M ranges: from the store, and from a fetch in progress (`other` is not stored yet).
      const ranges = [[1000, 199_999], [600_000, 699_999], [0, 0], [123456, undefined]] as const
      for (const [entry, entryUrl] of [[big, url], [other, await narUrl(n, other)]] as const) {
        for (const [start, end] of ranges) {
          const res = await fetch(entryUrl, { headers: { range: `bytes=${start}-${end ?? ''}` } })
          const last = end ?? entry.nar.length - 1
          assert.equal(res.status, 206)
          assert.equal(res.headers.get('content-range'), `bytes ${start}-${last}/${entry.nar.length}`)
          assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(entry.nar.subarray(start, last + 1)))
        }
      }
    } finally {
      await n.stop()
    }
  })

  test('a NAR over 512 KiB whose last chunk is wrong: from an upstream never complete, from a mirror never sent', async () => {
    const evilDir = tempDir('narswarm-evil-')
    await writeSignedCache(evilDir, [big], key, 'none')
    const bad = Buffer.from(big.nar)
    bad[bad.length - 1]! ^= 0xff
    const file = `nar/${big.narHash.toNix32()}.nar`
    await writeFile(join(evilDir, file), bad)
    const evil = await startCacheServer(evilDir)
    const evil2 = await startCacheServer(evilDir)
    const db = join(evilDir, 'index.sqlite')
    const mapper = await openMapper(`sqlite://${db}`, { log: silentLogger(), stateDir: evilDir })
    await mapper.record!(big.narHash, { url: `${evil.url}/${file}`, compression: 'none' })
    await mapper.close?.()
    try {
      // The upstream itself sends it: the body is cut before its end, however the client reads it.
      const a = await startNarswarm(['--upstream', `${upstream(evil)}`])
      try {
        const url = await narUrl(a, big)
        await assert.rejects(async () => { await (await fetch(url)).arrayBuffer() })
        await a.waitForLog(l => l.msg === 'NAR failed verification; response aborted, source marked bad')
      } finally {
        await a.stop()
      }
      // A mirror sends it and the upstream is good: the first request gets the right bytes.
      const b = await startNarswarm(['--upstream', upstream(plain), '--mapper', `sqlite://${db}`, '--backend', `mirror+${evil.url}/,${evil2.url}/`])
      try {
        const res = await fetch(await narUrl(b, big))
        assert.equal(res.status, 200)
        assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(big.nar))
        assert.ok(evil.requests.some(r => r.startsWith('GET /nar/')), 'the mirror was tried')
        await b.waitForLog(l => l.msg === 'NAR failed verification before release; source marked bad')
      } finally {
        await b.stop()
      }
    } finally {
      await Promise.all([evil.close(), evil2.close()])
    }
  })

  test('the store serves a NAR whose narinfo expired once a fresh narinfo names the same NarHash', async () => {
    const upstreamServer = await startCacheServer(join(dir, 'xz'))
    const n = await startNarswarm(['--upstream', upstream(upstreamServer), '--narinfo-positive-ttl', '1s'])
    try {
      const url = await narUrl(n, other)
      assert.equal(sha(new Uint8Array(await (await fetch(url)).arrayBuffer())), sha(other.nar))
      await n.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === other.storePath)
      await new Promise(resolve => setTimeout(resolve, 1100))
      upstreamServer.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'status', status: 500 } })
      const fresh = await narUrl(n, other)
      assert.equal(fresh, url)
      assert.equal(upstreamServer.requests.filter(r => r.endsWith('.narinfo')).length, 2, 'the narinfo was fetched again')
      const res = await fetch(fresh)
      assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(other.nar))
      await n.waitForLog(l => l.msg === 'NAR served' && l.source === 'store' && l.storePath === other.storePath)
      // The URL without the hash part keeps working while the store holds the NAR.
      const bare = await fetch(fresh.replace(/\?.*$/, ''))
      assert.equal(sha(new Uint8Array(await bare.arrayBuffer())), sha(other.nar))
    } finally {
      await n.stop()
      await upstreamServer.close()
    }
  })

  test('a URL finds its path again through ?hash= after narswarm lost everything; a wrong one does not', async () => {
    const a = await startNarswarm(['--upstream', upstream(xz)])
    const url = (await narUrl(a, other)).replace(a.url, '')
    const badHash = (await narUrl(a, big)).replace(a.url, '').replace(/\?hash=.*/, `?hash=${other.hashPart}`)
    await a.stop()
    const b = await startNarswarm(['--upstream', upstream(xz)])
    try {
      const res = await fetch(`${b.url}${url}`)
      assert.equal(res.status, 200)
      assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(other.nar))
      const metrics = await (await fetch(`${b.url}/metrics`)).text()
      assert.doesNotMatch(metrics, /^narswarm_narinfo_requests_total\{[^}]*\} [1-9]/m, 'finding the path again is no narinfo request')
      assert.equal((await fetch(`${b.url}${badHash}`)).status, 404, 'a hash part whose narinfo names another NarHash')
      assert.equal((await fetch(`${b.url}${badHash.replace(/\?.*/, '')}`)).status, 404, 'the bare URL of an unknown NAR')
    } finally {
      await b.stop()
    }
  })

  test('a full state disk: NARs are still served, without sharing or caching', async (t) => {
    const state = tempDir('narswarm-full-')
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', state], { encoding: 'utf8' })
    if (mounted.status !== 0) { t.skip(`cannot mount a small tmpfs (needs root): ${mounted.stderr.trim()}`); return }
    try {
      const n = await startNarswarm(['--upstream', upstream(xz), '--state-dir', state])
      try {
        const url = await narUrl(n, big)
        for (let i = 0; i < 2; i++) {
          const res = await fetch(url)
          assert.equal(res.status, 200)
          assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(big.nar))
        }
        await n.waitForLog(l => l.msg.startsWith('state write') && /^(NAR spool|chunk store)$/.test(String(l.state)) && /ENOSPC|no space/i.test(String(l.err)))
      } finally {
        await n.stop()
      }
    } finally {
      spawnSync('umount', [state])
    }
  })

  test('Nix and Lix get a stored NAR as zstd, made of its chunks as stored; a chunk lost halfway is replaced in the same response', { skip: noZstd }, async () => {
    const n = await startNarswarm(['--upstream', upstream(xz)])
    const narInfo = async (e: CacheEntry, userAgent: string): Promise<string> =>
      await (await fetch(`${n.url}/${e.hashPart}.narinfo`, { headers: { 'user-agent': userAgent } })).text()
    try {
      assert.match(await narInfo(text, NIX_2_8), /^Compression: none$/m, 'not stored yet: uncompressed')
      const res = await fetch(await narUrl(n, text))
      assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(text.nar))
      await n.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === text.storePath)
      for (const userAgent of [NIX_2_8, LIX]) {
        const served = await narInfo(text, userAgent)
        assert.match(served, /^URL: nar\/[0-9a-z]{52}\.nar\.zst\?hash=[0-9a-z]{32}$/m, userAgent)
        assert.match(served, /^Compression: zstd$/m)
        assert.doesNotMatch(served, /^File(Hash|Size):/m, 'the stream has no fixed hash or size')
        assert.match(served, /^Sig: /m)
      }
      for (const userAgent of ['curl/8.5.0', 'curl/7.88.1 Nix/2.3.16', 'node']) assert.match(await narInfo(text, userAgent), /^Compression: none$/m, userAgent)
      const zstdUrl = `${n.url}/${/^URL: (.*)$/m.exec(await narInfo(text, NIX_2_8))![1]!}`
      const head = await fetch(zstdUrl, { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(head.headers.get('accept-ranges'), null, 'a zstd stream cannot be resumed')
      const stream = new Uint8Array(await (await fetch(zstdUrl, { headers: { range: 'bytes=10-' } })).arrayBuffer())
      assert.equal(sha(unzstd(stream)), sha(text.nar), 'the whole NAR, Range ignored')
      assert.ok(stream.length < text.nar.length * 0.8, `compressed chunks go out as stored (${stream.length} bytes for ${text.nar.length})`)

      // A stored chunk goes bad (its file changed) after the narinfo was served: the rest of the
      // NAR comes from the upstream, in the same response.
      const before = narGets(xz)
      const db = new DatabaseSync(stateDatabase(n.stateDir), { readOnly: true })
      const victim = db.prepare('SELECT pack, pack_offset AS offset, stored_size AS size FROM chunk WHERE stored_hash IS NOT NULL LIMIT 1').get() as { pack: number, offset: number, size: number }
      db.close()
      const pack = join(n.stateDir, 'chunks', 'packs', `${victim.pack}.pack`)
      const bytes = readFileSync(pack)
      bytes[victim.offset + victim.size - 8]! ^= 0x01
      writeFileSync(pack, bytes)
      const healed = new Uint8Array(await (await fetch(zstdUrl)).arrayBuffer())
      assert.equal(sha(unzstd(healed)), sha(text.nar))
      assert.equal(narGets(xz) - before, 1, 'the rest came from the upstream')
      await n.waitForLog(l => l.msg === 'the store lost a NAR while sending it: the rest comes from its sources')

      // A `.nar.zst` URL of a NAR the store does not hold (a narinfo kept by Nix after an eviction).
      const otherZstd = (await narUrl(n, other)).replace(/\.nar\?/, '.nar.zst?')
      assert.equal(sha(unzstd(new Uint8Array(await (await fetch(otherZstd)).arrayBuffer()))), sha(other.nar))
    } finally {
      await n.stop()
    }
  })

  test('a NAR every source lost: 404, and its narinfo leaves the cache', async () => {
    const upstreamServer = await startCacheServer(join(dir, 'xz'))
    upstreamServer.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'status', status: 404 } })
    const n = await startNarswarm(['--upstream', upstream(upstreamServer)])
    try {
      const url = await narUrl(n, lost)
      assert.equal((await fetch(url)).status, 404)
      await n.waitForLog(l => l.msg.startsWith('no source has the NAR any more') && l.storePath === lost.storePath)
      const asked = upstreamServer.requests.filter(r => r.endsWith('.narinfo')).length
      assert.equal((await fetch(`${n.url}/${lost.hashPart}.narinfo`)).status, 200)
      assert.equal(upstreamServer.requests.filter(r => r.endsWith('.narinfo')).length, asked + 1, 'asked again, not served from the cache')
    } finally {
      await n.stop()
      await upstreamServer.close()
    }
  })
})
