/**
 * The routing layer with the real Nix client and the upstream down: a closure's narinfos and NARs
 * are reachable only through an index (mapper) and a NAR source (backend). Once through `folder:` +
 * `file://`, once through `sqlite:` + `mirror+http://` with one dead mirror, and once with a hostile
 * source that serves altered bytes first: the closure still arrives intact from the other source.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { cp, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import { freePort } from '../helpers/net.ts'

describe('substitution through mappers and backends, upstream down', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let cache: string
  let deadUpstream: string
  let narinfos: NarInfo[]
  let run = 0

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: false })
    cache = join(nix.dir, 'cache')
    await copyTo(nix, closure, cache, 'zstd')
    narinfos = await Promise.all((await readdir(cache)).filter(n => n.endsWith('.narinfo'))
      .map(async n => NarInfo.parse(await readFile(join(cache, n), 'utf8'))))
    assert.equal(narinfos.length, closure.paths.length)
    deadUpstream = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${closure.publicKey}`
  })
  after(async () => { await nix?.cleanup() })

  /** Records every path of the closure in `mapperSpec`, with the locator `locatorOf(narInfo)`. */
  async function index (mapperSpec: string, ...locatorsOf: Array<(n: NarInfo) => string>): Promise<void> {
    const mapper = await openMapper(mapperSpec, { log: silentLogger(), stateDir: nix.dir })
    try {
      for (const n of narinfos) {
        for (const locatorOf of locatorsOf) {
          await mapper.record!(n.narHash, { url: locatorOf(n), compression: n.compression, fileSize: n.fileSize }, { narInfo: n.toString() })
        }
      }
    } finally {
      await mapper.close?.()
    }
  }

  async function substitute (args: string[]) {
    const narswarm = await startNarswarm(['--upstream', deadUpstream, '--trusted-public-keys', closure.publicKey, '--hedge-delay', '100ms', ...args])
    const store = `local?root=${join(nix.dir, `store-${run++}`)}`
    try {
      await nix.run('nix-store', ['--store', store, '--realise', closure.top,
        '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey])
      await nix.run('nix', ['store', 'verify', '--store', store, '--trusted-public-keys', closure.publicKey, '-r', closure.top])
      const fresh = JSON.parse(await nix.run('nix', ['path-info', '--store', store, '--json', '-r', closure.top])) as Array<{ path: string, narHash: string }>
      assert.deepEqual(fresh.map(p => p.path).sort(), closure.paths)
      for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
      return narswarm
    } finally {
      await narswarm.stop()
    }
  }

  test('folder: index + file:// backend', async () => {
    const dir = join(nix.dir, 'folder-index')
    await index(`folder://${dir}`, n => `file://${cache}/${n.url}`)
    const narswarm = await substitute(['--mapper', `folder://${dir}`, '--backend', `file://${cache}`])
    assert.ok(narswarm.logs.some(l => l.msg === 'narinfo from the index'))
    assert.ok(narswarm.logs.filter(l => l.msg === 'NAR served').every(l => String(l.source).startsWith('file')))
  })

  test('sqlite: index + two HTTP mirrors, one of them dead', async () => {
    const good = await startCacheServer(cache)
    const dead = `http://127.0.0.1:${await freePort()}/`
    try {
      const db = join(nix.dir, 'index.sqlite')
      await index(`sqlite://${db}`, n => `${dead}${n.url}`)
      await substitute(['--mapper', `sqlite://${db}`, '--backend', `mirror+${dead},${good.url}/`])
      assert.ok(good.requests.some(r => r.startsWith('GET /nar/')))
    } finally {
      await good.close()
    }
  })

  test('a hostile source serving altered bytes: the closure still arrives intact from the other', async () => {
    // The evil copy is uncompressed with one byte flipped in every NAR; the good copy is intact.
    const evil = join(nix.dir, 'evil')
    await cp(cache, evil, { recursive: true })
    for (const n of narinfos) {
      const file = join(evil, n.url)
      const bytes = await readFile(file)
      bytes[bytes.length >> 1]! ^= 0xff
      await writeFile(file, bytes)
    }
    const db = join(nix.dir, 'hostile.sqlite')
    await index(`sqlite://${db}`, n => `file://${evil}/${n.url}`, n => `file://${cache}/${n.url}`)
    const narswarm = await substitute(['--mapper', `sqlite://${db}`, '--backend', `file://${evil}`, '--backend', `file://${cache}`])
    const failed = narswarm.logs.filter(l => l.msg.startsWith('NAR failed verification'))
    assert.ok(failed.length > 0, 'the hostile source was tried and caught')
    assert.ok(narswarm.logs.filter(l => l.msg === 'NAR served').every(l => l.source !== failed[0]!.source), 'nothing was served from it')
  })
})
