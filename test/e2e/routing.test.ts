/**
 * The routing layer with the real Nix client. With the upstream down, a closure's narinfos and NARs
 * are reachable only through an index (mapper) and a NAR source (backend): through `folder:` +
 * `file://`, through `sqlite:` + `mirror+http://` with one dead mirror, through `sqlite:` + `s3://`
 * (a real S3-protocol server, NARs published by narswarm), through an index that knows the NARs
 * only by their FileHash (the upstream answering narinfos only), and with a hostile source that serves
 * altered bytes first: the closure still arrives intact from the other source. With the upstream up
 * and the indexed source slow to its first byte, the upstream starts after the untrusted budget and wins.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { cp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, readNarInfos, type Closure } from '../helpers/closure.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import type { NarInfo } from '../../src/nix/narinfo.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import { freePort } from '../helpers/net.ts'
import { startS3Server } from '../helpers/s3-server.ts'
import { openBackend } from '../../src/registry.ts'
import { decompress } from '../../src/nix/compression.ts'
import { createReadStream } from 'node:fs'

describe('substitution through mappers and backends', { skip: nixSkip() }, () => {
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
    narinfos = await readNarInfos(cache)
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

  async function substitute (args: string[], upstream = deadUpstream) {
    const narswarm = await startNarswarm(['--upstream', upstream, '--trusted-public-keys', closure.publicKey, '--hedge-delay', '100ms', ...args])
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

  test('an index that knows the NARs only by FileHash, with the upstream answering narinfos but failing every NAR', async () => {
    // nix-subsubd's indexes key a compressed NAR by the hash of its file, not by NarHash.
    const dir = join(nix.dir, 'filehash-index')
    const mapper = await openMapper(`folder://${dir}`, { log: silentLogger(), stateDir: nix.dir })
    try {
      for (const n of narinfos) await mapper.record!(n.fileHash!, { url: `file://${cache}/${n.url}`, compression: n.compression, fileSize: n.fileSize })
    } finally {
      await mapper.close?.()
    }
    const upstream = await startCacheServer(cache)
    upstream.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'status', status: 500 } })
    try {
      const narswarm = await substitute(['--mapper', `folder://${dir}`, '--backend', `file://${cache}`], `${upstream.url}?trusted-public-keys=${closure.publicKey}`)
      const served = narswarm.logs.filter(l => l.msg === 'NAR served')
      assert.ok(served.length >= closure.paths.length)
      assert.ok(served.every(l => String(l.source).startsWith('file')), `every NAR came from the index's locators: ${served.map(l => String(l.source)).join(', ')}`)
    } finally {
      await upstream.close()
    }
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

  test('sqlite: index + s3:// backend, NARs published into the bucket by narswarm', async (t) => {
    const s3 = await startS3Server('narswarm-e2e')
    if (s3.skip !== false) { t.skip(s3.skip); return }
    try {
      const spec = `s3://narswarm-e2e/cache?endpoint=${s3.endpoint}`
      const backend = await openBackend(spec, { log: silentLogger(), stateDir: nix.dir })
      const db = join(nix.dir, 's3.sqlite')
      const mapper = await openMapper(`sqlite://${db}`, { log: silentLogger(), stateDir: nix.dir })
      try {
        for (const n of narinfos) {
          const body = decompress(n.compression, createReadStream(join(cache, n.url)))
          const locator = await backend.publish!({ narHash: n.narHash, narSize: n.narSize, body })
          assert.ok(locator.url.startsWith('s3://narswarm-e2e/cache/nar/'))
          await mapper.record!(n.narHash, locator, { narInfo: n.toString() })
        }
      } finally {
        await mapper.close?.()
        await backend.close?.()
      }
      const narswarm = await substitute(['--mapper', `sqlite://${db}`, '--backend', spec])
      assert.ok(narswarm.logs.filter(l => l.msg === 'NAR served').every(l => String(l.source).startsWith('s3')))
    } finally {
      await s3.close()
    }
  })

  test('the upstream is up and the indexed mirror slow to its first byte: after the untrusted budget the upstream takes over', async () => {
    // The mirrors are asked first (index locators come before the upstream) but answer every NAR
    // after 20 s; after the 1 s untrusted budget the upstream starts too and wins.
    const slow = await startCacheServer(cache)
    const slow2 = await startCacheServer(cache)
    for (const s of [slow, slow2]) s.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'delay', ms: 20_000 } })
    const upstream = await startCacheServer(cache)
    try {
      const db = join(nix.dir, 'hedge.sqlite')
      await index(`sqlite://${db}`, n => `${slow.url}/${n.url}`)
      const narswarm = await substitute(['--mapper', `sqlite://${db}`, '--backend', `mirror+${slow.url}/,${slow2.url}/`, '--untrusted-budget', '1s'],
        `${upstream.url}?trusted-public-keys=${closure.publicKey}`)
      assert.ok([...slow.requests, ...slow2.requests].some(r => r.startsWith('GET /nar/')), 'a slow mirror was asked first')
      const served = narswarm.logs.filter(l => l.msg === 'NAR served')
      assert.ok(served.length >= closure.paths.length)
      assert.ok(served.every(l => !String(l.source).startsWith('mirror')), `every NAR came from the upstream: ${served.map(l => String(l.source)).join(', ')}`)
      assert.ok(upstream.requests.filter(r => r.startsWith('GET /nar/')).length >= closure.paths.length)
    } finally {
      await slow.close()
      await slow2.close()
      await upstream.close()
    }
  })
})
