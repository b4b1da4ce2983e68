/**
 * The publishing engine with real backends (two file:// directories) and a real sqlite: index:
 * every backend gets the NAR, the narinfo is signed by our key on top of the verified
 * signatures, a re-run skips, a NAR that does not match its NarHash is refused everywhere and
 * nothing is recorded, a backend that fails makes the path fail without recording it.
 */
import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { generateSecretKey, verifyNarInfo } from '../../src/nix/signature.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { openBackend, openMapper } from '../../src/registry.ts'
import { Publisher, type PublishItem } from '../../src/publish/publisher.ts'
import type { Backend, Mapper } from '../../src/types.ts'
import { UpstreamError } from '../../src/errors.ts'

function item (name: string, nar: Buffer, opts: { narHash?: NixHash, references?: string[] } = {}): PublishItem {
  return {
    storePath: makeStorePath('output:out', NixHash.of('sha256', randomBytes(32)), name),
    narHash: opts.narHash ?? NixHash.of('sha256', nar),
    narSize: nar.length,
    references: opts.references ?? [],
    sigs: [],
    openNar: async () => (async function * () { for (let i = 0; i < nar.length; i += 65536) yield nar.subarray(i, i + 65536) })()
  }
}

describe('Publisher', () => {
  let dir: string
  let backends: Backend[]
  let mapper: Mapper
  const key = generateSecretKey('publisher-test-1')
  const components = () => ({ log: silentLogger(), stateDir: dir })

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-publisher-'))
    backends = [await openBackend(`file://${dir}/a`, components()), await openBackend(`file://${dir}/b?compression=none`, components())]
    mapper = await openMapper(`sqlite://${dir}/index.sqlite`, components())
  })
  afterEach(async () => {
    await mapper.close?.()
    await rm(dir, { recursive: true, force: true })
  })

  it('publishes to every backend and records a narinfo signed by our key', async () => {
    const items = [item('one', randomBytes(200_000)), item('empty-ish', Buffer.alloc(8)), item('big', randomBytes(3 << 20))]
    const done: string[] = []
    let bytes = 0
    const publisher = new Publisher({ backends, mappers: [mapper], signKeys: [key.secret], log: silentLogger(), events: { done: (i, o) => done.push(`${o} ${i.storePath}`), bytes: n => { bytes += n } } })
    await publisher.run(items, 2)
    assert.equal(done.filter(d => d.startsWith('published')).length, 3)
    assert.equal(bytes, items.reduce((n, i) => n + i.narSize, 0))
    for (const i of items) {
      const locators = await mapper.lookup(i.narHash)
      assert.equal(locators.length, 2, 'one locator per backend')
      const text = await mapper.narInfo!(i.storePath.slice(11, 43))
      assert.ok(text !== undefined)
      const narInfo = NarInfo.parse(text)
      assert.ok(narInfo.narHash.equals(i.narHash))
      assert.deepEqual(verifyNarInfo(narInfo, [key.public]).validKeyNames, ['publisher-test-1'])
    }
  })

  it('skips on a re-run what is recorded everywhere', async () => {
    const items = [item('x', randomBytes(1000)), item('y', randomBytes(1000))]
    const outcomes: string[] = []
    const make = () => new Publisher({ backends, mappers: [mapper], signKeys: [key.secret], log: silentLogger(), events: { done: (_, o) => outcomes.push(o) } })
    await make().run(items, 1)
    await make().run(items, 1)
    assert.deepEqual(outcomes, ['published', 'published', 'skipped', 'skipped'])
  })

  it('refuses a NAR that does not match its NarHash: no backend keeps it, nothing is recorded', async () => {
    const bad = item('tampered', randomBytes(100_000), { narHash: NixHash.of('sha256', 'the bytes that were registered') })
    const failed: string[] = []
    await new Publisher({ backends, mappers: [mapper], signKeys: [key.secret], log: silentLogger(), events: { failed: (p, r) => failed.push(`${p}: ${r}`) } }).run([bad], 1)
    assert.equal(failed.length, 1)
    assert.match(failed[0]!, /hash mismatch/)
    assert.deepEqual(await mapper.lookup(bad.narHash), [])
    assert.equal(await mapper.narInfo!(bad.storePath.slice(11, 43)), undefined)
    // Nothing left behind, temporary files included.
    for (const sub of ['a', 'b']) assert.deepEqual(await readdir(join(dir, sub, 'nar')).catch(() => []), [])
  })

  it('a backend that fails fails the path, which is not recorded; the next run completes it', async () => {
    const broken: Backend = { name: 'broken', schemes: ['broken'], open: async () => undefined, publish: async () => { throw new UpstreamError('broken', 'is down') } }
    const it1 = item('z', randomBytes(5000))
    const failed: string[] = []
    await new Publisher({ backends: [backends[0]!, broken], mappers: [mapper], signKeys: [], log: silentLogger(), events: { failed: (_, r) => failed.push(r) } }).run([it1], 1)
    assert.match(failed[0]!, /broken: .*is down/)
    assert.deepEqual(await mapper.lookup(it1.narHash), [])
    const outcomes: string[] = []
    await new Publisher({ backends: [backends[0]!], mappers: [mapper], signKeys: [], log: silentLogger(), events: { done: (_, o) => outcomes.push(o) } }).run([it1], 1)
    assert.deepEqual(outcomes, ['published'])
    assert.equal((await mapper.lookup(it1.narHash)).length, 1)
  })

  it('narinfo-only: records the existing locator and the narinfo as it was signed', async () => {
    const nar = randomBytes(100)
    const base = item('elsewhere', nar)
    const text = NarInfo.build({ storePath: base.storePath, url: 'nar/x.nar.xz', compression: 'xz', narHash: base.narHash, narSize: nar.length }).toString()
    const existing: PublishItem = { ...base, existing: { locator: { url: 'https://cache.example/nar/x.nar.xz', compression: 'xz' }, narInfo: text } }
    delete existing.openNar
    await new Publisher({ backends: [], mappers: [mapper], signKeys: [key.secret], log: silentLogger() }).publish(existing)
    assert.deepEqual(await mapper.lookup(base.narHash), [{ url: 'https://cache.example/nar/x.nar.xz', compression: 'xz' }])
    assert.equal(await mapper.narInfo!(base.storePath.slice(11, 43)), text, 'not re-signed: the NAR was never read')
  })
})
