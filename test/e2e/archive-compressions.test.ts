/**
 * Caches that Nix writes with the compressions it takes from libarchive (`nix copy --to
 * 'file://…?compression=lz4'`: gzip, compress, lzma, lzip, lz4): narswarm in front of each, with
 * the real Nix client substituting a small closure through it into a fresh store, require-sigs on.
 * narswarm must decode each to verify it; it hands Nix the NAR uncompressed.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { DECODE_ONLY } from '../../src/nix/archive-codecs.ts'
import { decodeProblem } from '../../src/nix/compression.ts'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, type Closure } from '../helpers/closure.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

describe('caches in the compressions Nix writes through libarchive', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: false })
  })
  after(async () => { await nix?.cleanup() })

  test('a compression whose program is missing: the narinfo is absent from that upstream, and the next one serves the path', async () => {
    const lz4 = join(nix.dir, 'cache-lz4-missing')
    const xz = join(nix.dir, 'cache-xz')
    await copyTo(nix, closure, lz4, 'lz4', closure.paths)
    await copyTo(nix, closure, xz, 'xz', closure.paths)
    const upstreams = [await startCacheServer(lz4), await startCacheServer(xz)]
    // No program on PATH: xz and bzip2 decode in-process, lz4 cannot be decoded at all.
    const env = { PATH: nix.dir }
    const hashPart = closure.note.slice('/nix/store/'.length, '/nix/store/'.length + 32)
    const alone = await startNarswarm(['--upstream', `${upstreams[0]!.url}?trusted-public-keys=${closure.publicKey}`], { env })
    const both = await startNarswarm([
      '--upstream', `${upstreams[0]!.url}?priority=10&trusted-public-keys=${closure.publicKey}`,
      '--upstream', `${upstreams[1]!.url}?priority=50&trusted-public-keys=${closure.publicKey}`], { env })
    try {
      assert.equal((await fetch(`${alone.url}/${hashPart}.narinfo`)).status, 404)
      const line = await alone.waitForLog(l => l.msg === 'narinfo rejected, treated as absent from this upstream')
      assert.match(String(line.reason), /lz4: decoding it needs 'lz4' \(Debian package lz4\), not found on PATH/)

      const store = `local?root=${join(nix.dir, 'store-lz4-missing')}`
      await nix.run('nix-store', ['--store', store, '--realise', closure.top,
        '--option', 'substituters', both.url, '--option', 'trusted-public-keys', closure.publicKey])
      assert.ok(upstreams[1]!.requests.some(r => r.endsWith('.nar.xz')), 'the NARs came from the xz cache')
      // The preferred lz4 cache was asked for the narinfos, and for no NAR: no download bound to fail.
      assert.ok(upstreams[0]!.requests.some(r => r.endsWith('.narinfo')))
      assert.ok(!upstreams[0]!.requests.some(r => r.includes('/nar/')), 'no download that was bound to fail')
    } finally {
      await alone.stop()
      await both.stop()
      for (const u of upstreams) await u.close()
    }
  })

  for (const compression of DECODE_ONLY) {
    test(`from a ${compression} cache`, { skip: decodeProblem(compression) }, async () => {
      const dir = join(nix.dir, `cache-${compression}`)
      await copyTo(nix, closure, dir, compression, closure.paths)
      const upstream = await startCacheServer(dir)
      const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
      try {
        const store = `local?root=${join(nix.dir, `store-${compression}`)}`
        await nix.run('nix-store', ['--store', store, '--realise', closure.top,
          '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey,
          '--option', 'require-sigs', 'true'])
        const paths = (await nix.run('nix-store', ['--store', store, '--query', '--requisites', closure.top])).trim().split('\n').sort()
        assert.deepEqual(paths, [...closure.paths].sort())
        await nix.run('nix', ['store', 'verify', '--store', store, '--no-trust', '--trusted-public-keys', closure.publicKey, '-r', closure.top])
        // Every NAR came through narswarm's verified relay, decoded from the upstream's files.
        for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
        assert.ok(upstream.requests.some(r => r.includes('/nar/')), 'the NARs came from the upstream')
      } finally {
        assert.equal(await narswarm.stop(), 0)
        await upstream.close()
      }
    })
  }
})
