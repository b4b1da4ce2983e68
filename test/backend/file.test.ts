import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { randomBytes } from 'node:crypto'
import { FileBackend, plugin } from '../../src/backend/file.ts'
import { ConfigError, IntegrityError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { decompress } from '../../src/nix/compression.ts'
import { silentLogger } from '../../src/log.ts'
import type { Backend } from '../../src/types.ts'
import { chunks, collect } from '../helpers/bytes.ts'

const components = { log: silentLogger(), stateDir: tmpdir() }
const dirs = new Map<Backend, string>()

async function fresh (compression = 'none'): Promise<FileBackend> {
  const dir = await mkdtemp(join(tmpdir(), 'file-backend-'))
  const backend = await plugin.create(plugin.parse(new URL(`${pathToFileURL(dir).href}?compression=${compression}`)), components) as FileBackend
  dirs.set(backend, dir)
  return backend
}


describe('file backend spec', () => {
  const valid: Array<[string, object]> = [
    ['file:///srv/nars', { directory: '/srv/nars', compression: 'zstd' }],
    ['file:///srv/nars/', { directory: '/srv/nars', compression: 'zstd' }],
    ['file://localhost/srv/nars?compression=xz', { directory: '/srv/nars', compression: 'xz' }],
    ['file:///srv/my%20nars?compression=none', { directory: '/srv/my nars', compression: 'none' }]
  ]
  for (const [spec, init] of valid) {
    it(`parses ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), init))
  }
  const invalid: Array<[string, RegExp]> = [
    ['file://srv/nars', /must be absolute/],
    ['file:///srv/nars?compression=lz4', /compression must be one of/],
    ['file:///srv/nars?level=3', /unknown option 'level'/],
    ['file:///', /root directory/],
    ['http:///srv/nars', /file:\/\/\/absolute/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('file backend', () => {
  let backend: FileBackend
  let dir: string
  before(async () => { backend = await fresh('zstd'); dir = dirs.get(backend)! })
  after(async () => { await backend.close(); await rm(dir, { recursive: true, force: true }) })

  it('publishes compressed under a content-addressed name and opens it again', async () => {
    const bytes = randomBytes(200_000)
    const narHash = NixHash.of('sha256', bytes)
    const locator = await backend.publish({ narHash, narSize: bytes.length, body: chunks(bytes) })
    assert.equal(locator.url, `${pathToFileURL(dir).href}/nar/${narHash.toNix32()}.nar.zst`)
    assert.equal(locator.compression, 'zstd')
    const source = await backend.open(locator)
    assert.ok(source !== undefined)
    assert.equal(source.compression, 'zstd')
    assert.equal(source.fileSize, locator.fileSize)
    assert.deepEqual(await collect(decompress('zstd', source.body)), bytes)
  })

  it('refuses bytes that do not match the NarHash and leaves no file behind', async () => {
    const bytes = randomBytes(10_000)
    const other = randomBytes(10_000)
    await assert.rejects(backend.publish({ narHash: NixHash.of('sha256', other), narSize: bytes.length, body: chunks(bytes) }), IntegrityError)
    const left = await readdir(join(dir, 'nar'))
    assert.ok(!left.some(f => f.includes(NixHash.of('sha256', other).toNix32())), `left behind: ${left.join(', ')}`)
    assert.ok(!left.some(f => f.endsWith('.tmp')))
  })

  it('refuses bytes that do not match the NarSize', async () => {
    const bytes = randomBytes(1000)
    await assert.rejects(backend.publish({ narHash: NixHash.of('sha256', bytes), narSize: 999, body: chunks(bytes) }), IntegrityError)
    assert.ok(!(await readdir(join(dir, 'nar'))).some(f => f.endsWith('.tmp')))
  })

  it('aborting a read rejects with the caller\'s reason', async () => {
    const bytes = randomBytes(4 << 20)
    const locator = await backend.publish({ narHash: NixHash.of('sha256', bytes), narSize: bytes.length, body: chunks(bytes) })
    const controller = new AbortController()
    const source = await backend.open({ ...locator, compression: 'none' }, { signal: controller.signal })
    const reason = new Error('no longer needed')
    await assert.rejects((async () => { for await (const _ of source!.body) controller.abort(reason) })(), (err: unknown) => err === reason)
  })

  it('a locator outside the directory resolves to undefined', async () => {
    const outside = join(dir, '..', `outside-${randomBytes(4).toString('hex')}.nar`)
    await writeFile(outside, 'secret')
    try {
      assert.equal(await backend.open({ url: pathToFileURL(outside).href, compression: 'none' }), undefined)
      assert.equal(await backend.open({ url: `${pathToFileURL(dir).href}/nar/../../${outside.split('/').pop()!}`, compression: 'none' }), undefined)
      assert.equal(await backend.open({ url: 'file:///etc/passwd', compression: 'none' }), undefined)
      assert.equal(await backend.open({ url: 'https://example.org/nar/x.nar', compression: 'none' }), undefined)
    } finally {
      await rm(outside, { force: true })
    }
  })

  it('opens a file that someone else placed in the directory, in the compression its locator names', async () => {
    await writeFile(join(dir, 'hand-made.nar.xz'), 'not really xz')
    const source = await backend.open({ url: `${pathToFileURL(dir).href}/hand-made.nar.xz`, compression: 'xz' })
    assert.equal(source?.compression, 'xz')
    assert.equal((await collect(source!.body)).toString(), 'not really xz')
  })
})
