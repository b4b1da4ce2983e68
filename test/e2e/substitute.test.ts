/**
 * End to end with the real Nix client: a closure that Nix built and `nix copy`-ed into xz and
 * zstd binary caches, signed with a test key, served by a plain HTTP server; narswarm in front of
 * it; a fresh Nix store substitutes the whole closure through narswarm with require-sigs on.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { stat, readlink, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

describe('a fresh Nix store substitutes a real closure through narswarm', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  const caches: Record<string, CacheServer> = {}

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: true })
    for (const compression of ['xz', 'zstd']) {
      const dir = join(nix.dir, `cache-${compression}`)
      await copyTo(nix, closure, dir, compression)
      caches[compression] = await startCacheServer(dir)
    }
  })
  after(async () => {
    for (const c of Object.values(caches)) await c.close()
    await nix?.cleanup()
  })

  for (const compression of ['xz', 'zstd']) {
    test(`from a ${compression} cache, require-sigs on`, async () => {
      const upstream = caches[compression]!
      const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
      try {
        const root = join(nix.dir, `store-${compression}`)
        const store = `local?root=${root}`
        await nix.run('nix-store', ['--store', store, '--realise', closure.top,
          '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey,
          '--option', 'require-sigs', 'true'])

        // Every path of the closure is valid in the fresh store, with the NarHash of the original.
        const original = JSON.parse(await nix.run('nix', ['path-info', '--json', '-r', closure.top])) as Array<{ path: string, narHash: string, narSize: number }>
        const fresh = JSON.parse(await nix.run('nix', ['path-info', '--store', store, '--json', '-r', closure.top])) as Array<{ path: string, narHash: string, narSize: number }>
        const summary = (l: typeof original) => l.map(p => `${p.path} ${p.narHash} ${p.narSize}`).sort()
        assert.deepEqual(summary(fresh), summary(original))
        assert.equal(fresh.length, closure.paths.length)
        assert.ok(original.some(p => p.narSize > 100 * 1024 * 1024), 'the closure holds a NAR of more than 100 MiB')
        await nix.run('nix', ['store', 'verify', '--store', store, '--no-trust', '--trusted-public-keys', closure.publicKey, '-r', closure.top])

        // The details survived: executable bit, symlinks, nested files.
        const tree = join(root, closure.tree)
        assert.ok(((await stat(join(tree, 'bin/hello'))).mode & 0o111) !== 0)
        assert.equal(await readlink(join(tree, 'bin/doc-link')), '../share/doc')
        assert.equal(await readlink(join(tree, 'dangling')), '/nonexistent/target')
        assert.equal((await readFile(join(root, closure.top, 'note'), 'utf8')), 'a text file\n')

        // Every NAR went through narswarm's verified relay, from the upstream's compressed files.
        for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
        assert.ok(upstream.requests.some(r => r.endsWith(compression === 'xz' ? '.nar.xz' : '.nar.zst')))
      } finally {
        assert.equal(await narswarm.stop(), 0, 'narswarm exits cleanly on SIGTERM')
      }
    })
  }
})
