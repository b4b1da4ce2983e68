import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { ConfigError, FormatError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin } from '../../src/mapper/sqlite.ts'
import { tempDir } from '../helpers/temp.ts'



describe('sqlite mapper spec', () => {
  const valid: Array<[string, unknown]> = [
    ['sqlite:', { name: 'sqlite:', file: undefined }],
    ['sqlite:///var/lib/narswarm/index.db', { name: 'sqlite:///var/lib/narswarm/index.db', file: '/var/lib/narswarm/index.db' }],
    ['sqlite:///srv/my%20index.db', { name: 'sqlite:///srv/my%20index.db', file: '/srv/my index.db' }]
  ]
  for (const [spec, init] of valid) {
    it(`accepts ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), init))
  }
  const invalid: Array<[string, RegExp]> = [
    ['sqlite:index.db', /relative/],
    ['sqlite://host/index.db', /host/],
    ['sqlite:///x.db?cache=1', /unknown option 'cache'/],
    ['sqlite:///x.db#frag', /fragment/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('sqlite mapper', () => {
  const hash = (): NixHash => NixHash.of('sha256', randomBytes(32))

  it('keeps its entries across a reopen of the file', async () => {
    const init = plugin.parse(new URL(`sqlite://${join(tempDir(), 'index.db')}`))
    const components = { log: silentLogger(), stateDir: tempDir() }
    const narHash = hash()
    const a = await plugin.create(init, components)
    await a.record!(narHash, { url: 'ipfs:bafy', compression: 'none' })
    await a.close!()
    const b = await plugin.create(init, components)
    assert.deepEqual(await b.lookup(narHash), [{ url: 'ipfs:bafy', compression: 'none' }])
    await b.close!()
  })

  it('refuses a narinfo whose NarHash is not the recorded one, and records nothing', async () => {
    const m = await plugin.create(plugin.parse(new URL('sqlite:')), { log: silentLogger(), stateDir: tempDir() })
    const narHash = hash()
    const text = `StorePath: /nix/store/${'1'.repeat(32)}-x\nURL: nar/a.nar\nCompression: none\nNarHash: ${hash().toString()}\nNarSize: 5\nReferences: \n`
    await assert.rejects(m.record!(narHash, { url: 'file:///a', compression: 'none' }, { narInfo: text }), FormatError)
    await assert.rejects(m.record!(narHash, { url: 'file:///a', compression: 'none' }, { narInfo: 'garbage' }), FormatError)
    assert.deepEqual(await m.lookup(narHash), [])
    assert.equal(await m.narInfo!('1'.repeat(32)), undefined)
    await m.close!()
  })

  it('recording a known URL again updates its compression and size', async () => {
    const m = await plugin.create(plugin.parse(new URL('sqlite:')), { log: silentLogger(), stateDir: tempDir() })
    const narHash = hash()
    await m.record!(narHash, { url: 'file:///a', compression: 'none' })
    await m.record!(narHash, { url: 'file:///a', compression: 'zstd', fileSize: 3 })
    assert.deepEqual(await m.lookup(narHash), [{ url: 'file:///a', compression: 'zstd', fileSize: 3 }])
    await m.close!()
  })
})
