/**
 * Caches that Nix writes with the compressions it takes from libarchive (`nix copy --to
 * 'file://…?compression=lz4'`: gzip, compress, lzma, lzip, lz4): narswarm in front of each, with
 * the real Nix client substituting a small closure through it into a fresh store, require-sigs on.
 * narswarm must decode each to verify it; it hands Nix the NAR uncompressed.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { DECODE_ONLY, DECODE_PROGRAMS } from '../../src/nix/archive-codecs.ts'
import { findBinary } from '../../src/nix/compression.ts'
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

  for (const compression of DECODE_ONLY) {
    const program = compression === 'gzip' ? undefined : DECODE_PROGRAMS[compression]
    const skip = program !== undefined && findBinary(program.bin) === false ? `decoding ${compression} needs the '${program.bin}' program, not installed` : undefined
    test(`from a ${compression} cache`, { skip }, async () => {
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
