import { describe, it, mock, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import fsp from 'node:fs/promises'
import { mkdirSync, writeFileSync, readFileSync, readdirSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parse as parseYaml } from 'yaml'
import { ConfigError, FormatError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin } from '../../src/mapper/folder.ts'
import type { Mapper } from '../../src/types.ts'
import { tempDir } from '../helpers/temp.ts'


const components = { log: silentLogger(), stateDir: tmpdir() }
async function open (dir: string): Promise<Mapper> {
  return await plugin.create(plugin.parse(new URL(`folder://${dir}`)), components)
}
const hash = (): NixHash => NixHash.of('sha256', randomBytes(32))


describe('folder mapper spec', () => {
  const valid: Array<[string, unknown]> = [
    ['folder:///srv/nss-map', { name: 'folder:///srv/nss-map', dir: '/srv/nss-map' }],
    ['folder:///srv/nss-map/', { name: 'folder:///srv/nss-map/', dir: '/srv/nss-map' }]
  ]
  for (const [spec, init] of valid) it(`accepts ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), init))
  const invalid: Array<[string, RegExp]> = [
    ['folder:', /path is missing/],
    ['folder:nss-map', /relative/],
    ['folder://server/srv/nss-map', /host/],
    ['folder:///srv/nss-map?watch=1', /unknown option 'watch'/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('folder mapper files', () => {
  afterEach(() => mock.restoreAll())

  it('writes the documented schema where the documented layout says', async () => {
    const dir = tempDir()
    const m = await open(dir)
    const narHash = hash()
    const fileHash = hash()
    const hashPart = 'a'.repeat(32)
    const narInfo = `StorePath: /nix/store/${hashPart}-hello\nURL: nar/x.nar.xz\nCompression: xz\nFileHash: ${fileHash.toString()}\nFileSize: 10\nNarHash: ${narHash.toString()}\nNarSize: 120\nReferences: \n`
    await m.record!(narHash, { url: 'file:///srv/nars/x.nar.xz', compression: 'xz', fileSize: 10 })
    await m.record!(narHash, { url: 'ipfs:bafy', compression: 'none' }, { narInfo })
    const hex = narHash.toBase16()
    const file = join(dir, hex[0]!, `${hex}.yaml`)
    const doc = parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>
    assert.deepEqual(doc, {
      version: 1,
      narHash: narHash.toString(),
      fileHash: fileHash.toString(),
      narSize: 120,
      locators: [{ url: 'file:///srv/nars/x.nar.xz', compression: 'xz', fileSize: 10 }, { url: 'ipfs:bafy', compression: 'none' }],
      narInfo
    })
    const fhex = fileHash.toBase16()
    assert.equal(readFileSync(join(dir, fhex[0]!, `${fhex}.yaml`), 'utf8'), readFileSync(file, 'utf8'))
    assert.equal(readFileSync(join(dir, 'narinfo', `${hashPart}.narinfo`), 'utf8'), narInfo)
    assert.deepEqual(readdirSync(join(dir, hex[0]!)).filter(n => n.endsWith('.tmp')), [])
    await m.close!()
  })

  it('reads a file written by hand (keyed by FileHash, base16 hashes, unknown keys)', async () => {
    const dir = tempDir()
    const narHash = hash()
    const fileHash = hash()
    const fhex = fileHash.toBase16()
    mkdirSync(join(dir, fhex[0]!))
    writeFileSync(join(dir, fhex[0]!, `${fhex}.yaml`), [
      '# written by another tool',
      'version: 1',
      `narHash: sha256:${narHash.toBase16()}`,
      `fileHash: "${fileHash.toSri()}"`,
      'comment: kept by git',
      'locators:',
      '  - url: https://mirror.example/nar/x.nar.xz',
      '    compression: xz',
      '    mirror-region: eu',
      ''
    ].join('\n'))
    const m = await open(dir)
    assert.deepEqual(await m.lookup(fileHash), [{ url: 'https://mirror.example/nar/x.nar.xz', compression: 'xz' }])
    assert.deepEqual(await m.lookup(narHash), [])
    await m.close!()
  })

  it('a malformed file, an unknown version or a file under the wrong name is a FormatError', async () => {
    const dir = tempDir()
    const m = await open(dir)
    const put = (key: NixHash, text: string): void => {
      const hex = key.toBase16()
      mkdirSync(join(dir, hex[0]!), { recursive: true })
      writeFileSync(join(dir, hex[0]!, `${hex}.yaml`), text)
    }
    const a = hash(); put(a, 'version: 1\nnarHash: [\n')
    const b = hash(); put(b, `version: 2\nnarHash: ${b.toString()}\nlocators: []\n`)
    const c = hash(); put(c, `version: 1\nnarHash: ${hash().toString()}\nlocators: []\n`)
    const d = hash(); put(d, `version: 1\nnarHash: ${d.toString()}\nlocators: [{url: 3}]\n`)
    for (const key of [a, b, c, d]) await assert.rejects(m.lookup(key), FormatError)
    await m.close!()
  })

  it('writes go through a complete temporary file that is renamed into place', async () => {
    const dir = tempDir()
    const m = await open(dir)
    const narHash = hash()
    const hex = narHash.toBase16()
    const target = join(dir, hex[0]!, `${hex}.yaml`)
    await m.record!(narHash, { url: 'file:///one', compression: 'none' })
    const before = readFileSync(target, 'utf8')
    const rename = fsp.rename.bind(fsp)
    const seen: Array<{ from: string, to: string }> = []
    mock.method(fsp, 'rename', async (from: string, to: string) => {
      seen.push({ from, to })
      // At the moment of the rename the temporary file is complete and the target still old.
      assert.ok((parseYaml(readFileSync(from, 'utf8')) as { locators: unknown[] }).locators.length === 2)
      assert.equal(readFileSync(to, 'utf8'), before)
      await rename(from, to)
    })
    await m.record!(narHash, { url: 'file:///two', compression: 'none' })
    assert.equal(seen.length, 1)
    assert.equal(seen[0]!.to, target)
    assert.ok(seen[0]!.from.startsWith(join(dir, hex[0]!, '.')), 'the temporary file is a hidden sibling')
    assert.equal(existsSync(seen[0]!.from), false)
    await m.close!()
  })

  it('a write that fails before the rename leaves the old file whole and no temporary file behind', async () => {
    const dir = tempDir()
    const m = await open(dir)
    const narHash = hash()
    await m.record!(narHash, { url: 'file:///one', compression: 'none' })
    mock.method(fsp, 'rename', async () => { throw Object.assign(new Error('power cut'), { code: 'EIO' }) })
    await assert.rejects(m.record!(narHash, { url: 'file:///two', compression: 'none' }), /power cut/)
    mock.restoreAll()
    assert.deepEqual(await m.lookup(narHash), [{ url: 'file:///one', compression: 'none' }])
    const hex = narHash.toBase16()
    assert.deepEqual(readdirSync(join(dir, hex[0]!)), [`${hex}.yaml`])
    // The queue goes on after a failed write.
    await m.record!(narHash, { url: 'file:///three', compression: 'none' })
    assert.equal((await m.lookup(narHash)).length, 2)
    await m.close!()
  })

  it('concurrent records of one NAR keep every locator', async () => {
    const m = await open(tempDir())
    const narHash = hash()
    await Promise.all(Array.from({ length: 50 }, (_, i) => m.record!(narHash, { url: `file:///n/${i}`, compression: 'none' })))
    assert.equal((await m.lookup(narHash)).length, 50)
    await m.close!()
  })

  it('a hash part that is not one never becomes a path', async () => {
    const dir = tempDir()
    const m = await open(dir)
    // A narinfo one directory up, where '../secret' would lead from the narinfo folder.
    writeFileSync(join(dir, 'secret.narinfo'), 'StorePath: /nix/store/secret\n')
    assert.equal(await m.narInfo!('../secret'), undefined)
    assert.equal(await m.narInfo!('../../../etc/passwd'), undefined)
    await m.close!()
  })
})
