/**
 * The NAR path with the real Nix client: every verified NAR kept in the chunk store and served
 * from it with the upstream gone; a hostile mirror (every NAR altered, above and below 512 KiB)
 * with a good upstream costing nothing in one run; a mirror that stalls beyond Nix's own stall
 * timeout overtaken by the upstream in time; stored NARs sent to Nix as zstd; and NAR URLs (plain
 * and zstd) that Nix keeps in its narinfo disk cache still working after narswarm lost its state
 * and restarted on the same address.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, readNarInfos, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { freePort } from '../helpers/net.ts'
import type { NarInfo } from '../../src/nix/narinfo.ts'
import { decompress } from '../../src/nix/compression.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'

describe('the NAR store and untrusted sources with the real Nix', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let cache: string
  let upstream: CacheServer
  let narinfos: NarInfo[]
  let run = 0

  before(async () => {
    nix = await makeNixEnv()
    // The big path is 1 MiB of random bytes: one NAR above the old 512 KiB limit, the others below.
    closure = await buildClosure(nix, { withBig: false, bigBytes: 1 << 20 })
    cache = join(nix.dir, 'cache')
    await copyTo(nix, closure, cache, 'xz')
    narinfos = await readNarInfos(cache)
    assert.ok(narinfos.some(n => n.narSize > 512 * 1024) && narinfos.some(n => n.narSize < 512 * 1024))
    upstream = await startCacheServer(cache)
  })
  after(async () => {
    await upstream?.close()
    await nix?.cleanup()
  })

  const upstreamArg = (server: CacheServer = upstream): string => `${server.url}?trusted-public-keys=${closure.publicKey}`

  /**
   * `nix-store --realise` of the closure into a fresh store through `narswarm`; throws on failure.
   * `cacheHome` gives Nix a narinfo disk cache of its own (default: one shared by the whole file).
   */
  async function realise (narswarm: NarswarmProcess, extra: string[] = [], cacheHome?: string): Promise<string> {
    const store = `local?root=${join(nix.dir, `store-${run++}`)}`
    const env = cacheHome === undefined ? {} : { env: { XDG_CACHE_HOME: cacheHome } }
    await nix.run('nix-store', ['--store', store, '--realise', closure.top,
      '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey, ...extra], env)
    await nix.run('nix', ['store', 'verify', '--store', store, '--trusted-public-keys', closure.publicKey, '-r', closure.top])
    return store
  }

  const served = (n: NarswarmProcess, from = 0) => n.logs.slice(from).filter(l => l.msg === 'NAR served')

  test('a closure substituted twice; the second time with the upstream stopped, everything from the store', async () => {
    const own = await startCacheServer(cache)
    const narswarm = await startNarswarm(['--upstream', upstreamArg(own)])
    try {
      await realise(narswarm)
      for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === path)
      await own.close()
      const mark = narswarm.logs.length
      await realise(narswarm)
      const second = served(narswarm, mark)
      assert.equal(second.length, closure.paths.length)
      assert.ok(second.every(l => l.source === 'store'), second.map(l => String(l.source)).join(', '))
    } finally {
      await narswarm.stop()
    }
  })

  test('Nix gets stored NARs as zstd; the .nar.zst URLs it keeps still work after narswarm lost its state', async () => {
    const listen = `127.0.0.1:${await freePort()}`
    const cacheHome = join(nix.dir, `nix-cache-${run}`)
    const first = await startNarswarm(['--upstream', upstreamArg(), '--listen', listen])
    try {
      await realise(first)
      for (const path of closure.paths) await first.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === path)
      const mark = first.logs.length
      // A Nix that never saw these narinfos: they now offer the stored NARs as zstd.
      await realise(first, [], cacheHome)
      const zstd = served(first, mark)
      assert.equal(zstd.length, closure.paths.length)
      assert.ok(zstd.every(l => l.source === 'store' && l.compression === 'zstd'), zstd.map(l => `${String(l.source)} ${String(l.compression)}`).join(', '))
    } finally {
      await first.stop() // removes its state directory
    }
    const second = await startNarswarm(['--upstream', upstreamArg(), '--listen', listen])
    try {
      // The same Nix cache: Nix asks only for the .nar.zst URLs it remembers; the upstream fills them.
      await realise(second, [], cacheHome)
      const again = served(second)
      assert.equal(again.length, closure.paths.length)
      assert.ok(again.every(l => l.compression === 'zstd' && l.kind === 'upstream'), again.map(l => `${String(l.kind)} ${String(l.compression)}`).join(', '))
    } finally {
      await second.stop()
    }
  })

  /**
   * An index whose only locators point at two mirrors, each holding every NAR uncompressed with its
   * last byte altered; `fn` runs with the narswarm arguments that use them.
   */
  async function withHostileMirrors (name: string, fn: (mirrors: CacheServer[], args: string[]) => Promise<void>): Promise<void> {
    const dir = join(nix.dir, name)
    await mkdir(join(dir, 'nar'), { recursive: true })
    const db = join(nix.dir, `${name}.sqlite`)
    const mapper = await openMapper(`sqlite://${db}`, { log: silentLogger(), stateDir: nix.dir })
    const mirrors = [await startCacheServer(dir), await startCacheServer(dir)]
    try {
      for (const n of narinfos) {
        const parts: Uint8Array[] = []
        for await (const c of decompress(n.compression, (async function * () { yield await readFile(join(cache, n.url)) })())) parts.push(c)
        const nar = Buffer.concat(parts)
        // The last chunk is the wrong one: nothing before it could have shown the mismatch.
        nar[nar.length - 1]! ^= 0xff
        const file = `nar/${n.narHash.toNix32()}.nar`
        await writeFile(join(dir, file), nar)
        await mapper.record!(n.narHash, { url: `${mirrors[0]!.url}/${file}`, compression: 'none', fileSize: nar.length })
      }
      await mapper.close?.()
      await fn(mirrors, ['--mapper', `sqlite://${db}`, '--backend', `mirror+${mirrors.map(m => `${m.url}/`).join(',')}`])
    } finally {
      await mapper.close?.()
      for (const m of mirrors) await m.close()
    }
  }

  test('a hostile mirror (every NAR altered) with a good upstream: one run, nothing bad reaches Nix', async () => {
    await withHostileMirrors('evil', async (_, args) => {
      const narswarm = await startNarswarm(['--upstream', upstreamArg(), ...args])
      try {
        await realise(narswarm)
        const caught = narswarm.logs.filter(l => l.msg === 'NAR failed verification before release; source marked bad')
        assert.equal(caught.length, closure.paths.length, 'every altered NAR was tried and caught before release')
        assert.ok(served(narswarm).every(l => l.source === upstream.url))
      } finally {
        await narswarm.stop()
      }
    })
  })

  test('a mirror that stalls past Nix\'s stall timeout, a slow upstream: the upstream starts within the untrusted budget', async () => {
    await withHostileMirrors('stalling', async (mirrors, args) => {
      // The mirrors send the start of each NAR, then nothing: slower than the budget and than
      // Nix's stall timeout (lowered to 6 s here from 300 s). The upstream takes 2 s to answer.
      for (const m of mirrors) m.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'stall', after: 4096 } })
      const slow = { match: (p: string) => p.startsWith('/nar/'), fault: { kind: 'delay', ms: 2000 } as const }
      upstream.faults.push(slow)
      const narswarm = await startNarswarm(['--upstream', upstreamArg(), ...args, '--untrusted-budget', '1s'])
      try {
        await realise(narswarm, ['--option', 'stalled-download-timeout', '6'])
        assert.ok(served(narswarm).every(l => l.source === upstream.url))
      } finally {
        upstream.faults.splice(upstream.faults.indexOf(slow), 1)
        await narswarm.stop()
      }
    })
  })

  test('narswarm loses its state and restarts on the same address: Nix\'s cached narinfos still work', async () => {
    const listen = `127.0.0.1:${await freePort()}`
    const first = await startNarswarm(['--upstream', upstreamArg(), '--listen', listen])
    try {
      await realise(first)
    } finally {
      await first.stop() // removes its state directory
    }
    const second = await startNarswarm(['--upstream', upstreamArg(), '--listen', listen])
    try {
      assert.equal(second.url, first.url)
      // Same Nix cache directory: Nix asks for no narinfo, only for the NAR URLs it remembers.
      await realise(second)
      assert.equal(served(second).length, closure.paths.length)
      assert.ok(!second.logs.some(l => l.msg === 'request refused'))
    } finally {
      await second.stop()
    }
  })
})
