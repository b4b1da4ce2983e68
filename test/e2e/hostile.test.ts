/**
 * Hostile and broken upstreams, with the real Nix client substituting through narswarm. Each case
 * asserts that Nix ends without the path (nothing corrupt lands in its store), that narswarm logs
 * the reason, and that narswarm keeps running.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, hashPartOf, readNarInfo, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer, type Fault } from '../helpers/cache-server.ts'
import { startNarswarm, type LogLine, type NarswarmProcess } from '../helpers/narswarm.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import type { NixHash } from '../../src/nix/hash.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { freePort } from '../helpers/net.ts'
import { ChunkIndex } from '../../src/chunk/index-db.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'

describe('hostile and broken upstreams', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  const caches: Record<string, { dir: string, server: CacheServer }> = {}
  let run = 0

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: false })
    for (const compression of ['none', 'xz']) {
      const dir = join(nix.dir, `cache-${compression}`)
      await copyTo(nix, closure, dir, compression, [closure.tree])
      caches[compression] = { dir, server: await startCacheServer(dir) }
    }
  })
  after(async () => {
    for (const c of Object.values(caches)) await c.server.close()
    await nix?.cleanup()
  })

  const narPathOf = async (compression: string): Promise<string> =>
    `/${NarInfo.parse(await readNarInfo(caches[compression]!.dir, closure.tree)).url}`

  /** Substitutes `tree` into a fresh store through a fresh narswarm; returns Nix's result. */
  async function substitute (upstream: string, check: (narswarm: NarswarmProcess) => Promise<void>, extraArgs: string[] = []) {
    const narswarm = await startNarswarm(['--upstream', upstream, ...extraArgs])
    try {
      const store = `local?root=${join(nix.dir, `store-${run++}`)}`
      const result = await nix.tryRun('nix-store', ['--store', store, '--realise', closure.tree,
        '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey])
      const valid = await nix.tryRun('nix-store', ['--store', store, '--check-validity', closure.tree])
      await check(narswarm)
      const info = await fetch(`${narswarm.url}/nix-cache-info`)
      assert.equal(info.status, 200, 'narswarm still answers after the hostile case')
      return { result, valid: valid.code === 0, narswarm, store }
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  }

  async function withFault<T> (compression: string, match: (p: string) => boolean, fault: Fault, fn: () => Promise<T>): Promise<T> {
    const entry = { match, fault }
    caches[compression]!.server.faults.push(entry)
    try { return await fn() } finally { caches[compression]!.server.faults.splice(caches[compression]!.server.faults.indexOf(entry), 1) }
  }

  const upstreamOf = (compression: string, extra = ''): string => `${caches[compression]!.server.url}?trusted-public-keys=${closure.publicKey}${extra}`
  const logged = (msg: string, errPart: string) => (l: LogLine) => l.msg.startsWith(msg) && String(l.err ?? l.reason ?? '').includes(errPart)
  const narinfoPath = (): string => `/${hashPartOf(closure.tree)}.narinfo`

  async function expectRefused (compression: string, fault: Fault | undefined, match: ((p: string) => boolean) | undefined,
    msg: string, errPart: string, extra = '') {
    const narHash = NarInfo.parse(await readNarInfo(caches[compression]!.dir, closure.tree)).narHash
    const go = () => substitute(upstreamOf(compression, extra), async n => {
      await n.waitForLog(logged(msg, errPart))
      // Nor is anything of it in narswarm's chunk store, by store path or by NarHash.
      assert.deepEqual(committed(n, closure.tree, narHash), { path: false, narHash: false })
    })
    const { result, valid } = fault === undefined ? await go() : await withFault(compression, match!, fault, go)
    assert.notEqual(result.code, 0, 'Nix must fail to substitute')
    assert.equal(valid, false, 'the path must not be valid in the fresh store')
  }

  /** Whether a running narswarm's chunk store holds the NAR of `storePath` (read from its state database). */
  function committed (narswarm: NarswarmProcess, storePath: string, narHash: NixHash): { path: boolean, narHash: boolean } {
    const db = openDatabase(stateDatabase(narswarm.stateDir))
    try {
      const index = new ChunkIndex(db)
      return { path: index.narOfPath(storePath) !== undefined, narHash: index.nar(narHash.digest) !== undefined }
    } finally {
      db.close()
    }
  }

  test('control: the same upstream without a fault; Nix gets the path and narswarm stores it', async () => {
    const narHash = NarInfo.parse(await readNarInfo(caches.none!.dir, closure.tree)).narHash
    const { result, valid } = await substitute(upstreamOf('none'), async n => {
      await n.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === closure.tree)
      assert.deepEqual(committed(n, closure.tree, narHash), { path: true, narHash: true })
    })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(valid, true)
  })

  test('a flipped byte in an uncompressed NAR', async () => {
    const nar = await narPathOf('none')
    await expectRefused('none', { kind: 'flip' }, p => p === nar, 'NAR failed verification', 'hash mismatch')
  })

  test('a flipped byte in an xz-compressed NAR', async () => {
    const nar = await narPathOf('xz')
    await expectRefused('xz', { kind: 'flip', offset: 100 }, p => p === nar, 'NAR failed verification', '')
  })

  test('a NAR truncated with an honest Content-Length', async () => {
    const nar = await narPathOf('none')
    await expectRefused('none', { kind: 'truncate', keep: 200, clean: true }, p => p === nar, 'NAR failed verification', 'size mismatch')
  })

  test('a NAR whose connection breaks mid-body', async () => {
    const nar = await narPathOf('none')
    await expectRefused('none', { kind: 'truncate', keep: 200 }, p => p === nar, 'NAR transfer aborted', '')
  })

  test('a wrong NarSize, signed by the trusted key', async () => {
    const original = NarInfo.parse(await readNarInfo(caches.none!.dir, closure.tree))
    const lying = NarInfo.build({ ...fieldsOf(original), narSize: original.narSize + 8, sigs: [] })
    const signed = signNarInfo(lying, closure.secretKey)
    await expectRefused('none', { kind: 'body', body: signed.toString() }, p => p === narinfoPath(), 'NAR failed verification', 'size mismatch')
  })

  test('a forged signature', async () => {
    const text = await readNarInfo(caches.none!.dir, closure.tree)
    const forged = text.replace(/^Sig: ([^:]+):.*$/m, (_, name: string) => `Sig: ${name}:${randomBytes(64).toString('base64')}`)
    assert.notEqual(forged, text)
    await expectRefused('none', { kind: 'body', body: forged }, p => p === narinfoPath(), 'narinfo rejected, treated as absent from this upstream', 'no valid signature')
  })

  test('a signature by an unknown key', async () => {
    const original = NarInfo.parse(await readNarInfo(caches.none!.dir, closure.tree))
    const other = generateSecretKey('someone-else-1')
    const unsigned = NarInfo.build({ ...fieldsOf(original), sigs: [] })
    const body = signNarInfo(unsigned, other.secret).toString()
    await expectRefused('none', { kind: 'body', body }, p => p === narinfoPath(), 'narinfo rejected, treated as absent from this upstream', 'no valid signature')
  })

  test('a malformed narinfo', async () => {
    const text = await readNarInfo(caches.none!.dir, closure.tree)
    await expectRefused('none', { kind: 'body', body: text.replace('\n', '\n\n') }, p => p === narinfoPath(), 'narinfo rejected, treated as absent from this upstream', 'malformed')
  })

  test('an upstream that answers 500 is not absence: nothing negative is cached', async () => {
    const narswarm = await startNarswarm(['--upstream', upstreamOf('none')])
    try {
      const url = `${narswarm.url}${narinfoPath()}`
      const failed = await withFault('none', p => p === narinfoPath(), { kind: 'status', status: 500 }, () => fetch(url))
      assert.equal(failed.status, 502)
      assert.equal(failed.headers.get('cache-control'), 'no-store')
      await narswarm.waitForLog(logged('upstream failed to answer a narinfo request', 'answered 500'))
      const healed = await fetch(url)
      assert.equal(healed.status, 200, 'the next request asks the upstream again')
    } finally {
      await narswarm.stop()
    }
  })

  test('an upstream that refuses connections', async () => {
    const port = await freePort()
    const { result, valid } = await substitute(`http://127.0.0.1:${port}?trusted-public-keys=${closure.publicKey}`,
      async n => { await n.waitForLog(logged('upstream failed to answer a narinfo request', 'ECONNREFUSED')) })
    assert.notEqual(result.code, 0)
    assert.equal(valid, false)
  })

  test('an upstream that hangs', async () => {
    await expectRefused('none', { kind: 'hang' }, p => p === narinfoPath(), 'upstream failed to answer a narinfo request', 'HEADERS_TIMEOUT', '&narinfo-timeout=300ms')
  })

  test('malformed request paths get 404, never 400 or 5xx', async () => {
    const narswarm = await startNarswarm(['--upstream', upstreamOf('none')])
    try {
      const bad = ['/ABCDEFGHIJKLMNOPQRSTUVWXYZ012345.narinfo', '/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo',
        '/0000000000000000000000000000000.narinfo', '/00000000000000000000000000000000.narinfo.x', '/nar/abc.nar',
        '/nar/0000000000000000000000000000000000000000000000000000.nar.xz', '/../../etc/passwd', '/%00', '/nar/',
        `/${hashPartOf(closure.tree).toUpperCase()}.narinfo`, '/log/x.drv', '/' + 'a'.repeat(5000)]
      for (const path of bad) {
        const res = await fetch(`${narswarm.url}${path}`)
        assert.equal(res.status, 404, path)
        assert.equal(res.headers.get('cache-control'), 'no-store', path)
      }
      const put = await fetch(`${narswarm.url}/nix-cache-info`, { method: 'PUT', body: 'StoreDir: /nix/store\n' })
      assert.equal(put.status, 405)
      // And the double slash Nix 2.8 produces for absolute-path URLs still routes.
      const ok = await fetch(`${narswarm.url}//nix-cache-info?x=1`)
      assert.equal(ok.status, 200)
    } finally {
      await narswarm.stop()
    }
  })
})

function fieldsOf (n: NarInfo) {
  return {
    storePath: n.storePath, url: n.url, compression: n.compression, narHash: n.narHash, narSize: n.narSize,
    references: n.references, deriver: n.deriver, ca: n.ca
  }
}
