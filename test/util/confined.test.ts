/**
 * Reads confined to their directory, for the three readers of local directories: the file backend,
 * the folder mapper and `index import`. A symlinked file or directory inside that leads out is
 * refused with OutsideDirectoryError (and nothing is read from, or written to, where it points);
 * symlinks that stay inside are followed; `..` and its encoded forms never leave the directory.
 */
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { FileBackend } from '../../src/backend/file.ts'
import { race } from '../../src/backend/race.ts'
import { SourceScores } from '../../src/backend/scores.ts'
import { OutsideDirectoryError, UpstreamError } from '../../src/errors.ts'
import type { Logger } from '../../src/log.ts'
import { statusFor } from '../../src/server/respond.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { FolderMapper } from '../../src/mapper/folder.ts'
import { exportIndex, importIndex } from '../../src/publish/index-files.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'

const refused = (err: unknown): boolean => err instanceof OutsideDirectoryError && /symlink|changed/.test(err.message)

describe('file backend: reads confined to its directory', () => {
  let base: string
  let dir: string
  let outside: string
  let backend: FileBackend
  const secret = 'secret bytes outside the directory'
  const warnings: string[] = []
  const url = (rel: string): string => `${pathToFileURL(dir).href}/${rel}`

  before(async () => {
    base = tempDir('narswarm-confined-')
    dir = join(base, 'nars')
    outside = join(base, 'outside')
    await mkdir(join(dir, 'nar'), { recursive: true })
    await mkdir(outside)
    await writeFile(join(outside, 'x.nar'), secret)
    backend = new FileBackend({ directory: dir, compression: 'none' }, { warn: (fields: { err: string }, msg: string) => { warnings.push(`${msg}: ${fields.err}`) } } as unknown as Logger)
  })

  it('refuses a symlinked file that points outside, and logs why', async () => {
    await symlink(join(outside, 'x.nar'), join(dir, 'nar', 'file-link.nar'))
    await assert.rejects(backend.open({ url: url('nar/file-link.nar'), compression: 'none' }), refused)
    assert.match(warnings.join('\n'), /refused a path that leads out of its directory: .*file-link\.nar leads out/)
  })

  it('refuses a file under a symlinked directory that points outside', async () => {
    await symlink(outside, join(dir, 'dir-link'))
    await assert.rejects(backend.open({ url: url('dir-link/x.nar'), compression: 'none' }), refused)
  })

  it('follows symlinks that stay inside', async () => {
    await writeFile(join(dir, 'nar', 'real.nar'), 'inside')
    await symlink(join(dir, 'nar', 'real.nar'), join(dir, 'inside-link.nar'))
    await symlink(join(dir, 'nar'), join(dir, 'inside-dir'))
    for (const rel of ['inside-link.nar', 'inside-dir/real.nar']) {
      const source = await backend.open({ url: url(rel), compression: 'none' })
      assert.equal(Buffer.from(await collect(source!.body)).toString(), 'inside', rel)
    }
  })

  it('never leaves through .. or its encoded forms', async () => {
    for (const rel of ['../outside/x.nar', 'nar/../../outside/x.nar', '%2e%2e/outside/x.nar', '.%2E/outside/x.nar', '..%2foutside%2fx.nar', '%2e%2e%2foutside%2fx.nar']) {
      assert.equal(await backend.open({ url: url(rel), compression: 'none' }), undefined, rel)
    }
  })

  it('a file swapped for a symlink after open is refused when read', async () => {
    await writeFile(join(dir, 'nar', 'swapped.nar'), 'inside')
    const source = await backend.open({ url: url('nar/swapped.nar'), compression: 'none' })
    assert.ok(source !== undefined)
    await rm(join(dir, 'nar', 'swapped.nar'))
    await symlink(join(outside, 'x.nar'), join(dir, 'nar', 'swapped.nar'))
    await assert.rejects(collect(source.body), refused)
  })

  it('in the race of a NAR\'s sources, a refusal makes room for the next source, and alone is a 502, not absence', async () => {
    await symlink(join(outside, 'x.nar'), join(dir, 'nar', 'race-link.nar'))
    const refusing = { name: backend.name, open: async (signal: AbortSignal) => await backend.open({ url: url('nar/race-link.nar'), compression: 'none' }, { signal }) }
    const other = { name: 'other', open: async () => ({ body: chunks(Buffer.from('from elsewhere')), compression: 'none' as const }) }
    const options = { scores: new SourceScores(), hedgeDelay: 1000, firstByteTimeout: 5000, rank: false }
    const winner = await race([refusing, other], options)
    assert.equal(winner?.name, 'other')
    assert.equal(Buffer.from(await collect(winner.source.body)).toString(), 'from elsewhere')
    await assert.rejects(race([refusing], options), (err: unknown) => err instanceof UpstreamError && statusFor(err) === 502 && /leads out/.test(err.message))
  })

  it('publishing into a nar/ directory that is a symlink out is refused, and nothing is written there', async () => {
    const other = join(base, 'nars2')
    await mkdir(other)
    await mkdir(join(outside, 'nar-target'))
    await symlink(join(outside, 'nar-target'), join(other, 'nar'))
    const b = new FileBackend({ directory: other, compression: 'none' })
    const bytes = randomBytes(1000)
    await assert.rejects(b.publish({ narHash: NixHash.of('sha256', bytes), narSize: bytes.length, body: chunks(bytes) }), refused)
    assert.deepEqual(await readdir(join(outside, 'nar-target')), [])
  })
})

describe('folder mapper: reads confined to its folder', () => {
  const narHash = NixHash.of('sha256', Buffer.from('a NAR'))
  const hex = narHash.toBase16()
  const yaml = `version: 1\nnarHash: ${narHash.toString()}\nlocators:\n  - url: https://mirror.example/x.nar\n    compression: none\n`
  let base: string

  before(() => { base = tempDir('narswarm-confined-folder-') })

  async function setUp (name: string): Promise<{ dir: string, outside: string, mapper: FolderMapper }> {
    const dir = join(base, name)
    const outside = join(base, `${name}-outside`)
    await mkdir(dir, { recursive: true })
    await mkdir(outside, { recursive: true })
    await writeFile(join(outside, `${hex}.yaml`), yaml)
    return { dir, outside, mapper: new FolderMapper(`folder://${dir}`, dir) }
  }

  it('refuses an entry file that is a symlink out', async () => {
    const { dir, outside, mapper } = await setUp('file-link')
    await mkdir(join(dir, hex[0]!))
    await symlink(join(outside, `${hex}.yaml`), join(dir, hex[0]!, `${hex}.yaml`))
    await assert.rejects(mapper.lookup(narHash), refused)
  })

  it('refuses entries under a directory that is a symlink out, and records nothing there', async () => {
    const { dir, outside, mapper } = await setUp('dir-link')
    await symlink(outside, join(dir, hex[0]!))
    await assert.rejects(mapper.lookup(narHash), refused)
    const before = await readFile(join(outside, `${hex}.yaml`), 'utf8')
    await assert.rejects(mapper.record(narHash, { url: 'https://other.example/y.nar', compression: 'none' }), refused)
    assert.equal(await readFile(join(outside, `${hex}.yaml`), 'utf8'), before)
    assert.deepEqual((await readdir(outside)).sort(), [`${hex}.yaml`])
  })

  it('refuses a narinfo that is a symlink out; a hash part with .. is never a path', async () => {
    const { dir, outside, mapper } = await setUp('narinfo-link')
    const hashPart = '0'.repeat(32)
    await writeFile(join(outside, 'x.narinfo'), 'StorePath: /nix/store/x\n')
    await mkdir(join(dir, 'narinfo'))
    await symlink(join(outside, 'x.narinfo'), join(dir, 'narinfo', `${hashPart}.narinfo`))
    await assert.rejects(mapper.narInfo(hashPart), refused)
    for (const bad of ['../../x', '%2e%2e%2fx', `..%2f${'0'.repeat(26)}`]) assert.equal(await mapper.narInfo(bad), undefined, bad)
  })

  it('follows symlinks that stay inside', async () => {
    const { dir, mapper } = await setUp('inside')
    await mkdir(join(dir, 'kept'))
    await writeFile(join(dir, 'kept', `${hex}.yaml`), yaml)
    await symlink(join(dir, 'kept'), join(dir, hex[0]!))
    assert.deepEqual((await mapper.lookup(narHash)).map(l => l.url), ['https://mirror.example/x.nar'])
  })
})

describe('index import: reads confined to the export directory', () => {
  let base: string
  let source: FolderMapper
  let hashPart: string

  before(async () => {
    base = tempDir('narswarm-confined-index-')
    const cache = join(base, 'cache')
    const entry = makeEntry('confined')
    await writeSignedCache(cache, [entry])
    hashPart = entry.hashPart
    source = new FolderMapper('source', join(base, 'source'))
    await source.record(entry.narHash, { url: 'https://mirror.example/x.nar', compression: 'none' }, { narInfo: await readFile(join(cache, `${entry.hashPart}.narinfo`), 'utf8') })
  })

  /** A fresh export in `base/<name>`, and a fresh mapper to import into. */
  async function exported (name: string): Promise<{ dir: string, v1: string, target: FolderMapper }> {
    const dir = join(base, name)
    await exportIndex(source, dir, [])
    return { dir, v1: join(dir, 'narswarm', 'v1'), target: new FolderMapper('target', join(base, `${name}-target`)) }
  }

  /** Moves `path` out of the export (same bytes) and leaves a symlink to it in its place. */
  async function linkOut (path: string, name: string): Promise<void> {
    const out = join(base, `${name}-moved-out`)
    await rename(path, out)
    await symlink(out, path)
  }

  it('imports an export as it is', async () => {
    const { dir, target } = await exported('plain')
    assert.equal((await importIndex(dir, target, { trustedKeys: [] })).narInfos, 1)
  })

  it('refuses a narinfo that is a symlink out, though its bytes match the manifest', async () => {
    const { dir, v1, target } = await exported('narinfo-link')
    await linkOut(join(v1, 'narinfo', hashPart), 'narinfo-link')
    await assert.rejects(importIndex(dir, target, { trustedKeys: [] }), refused)
    assert.equal(await target.narInfo(hashPart), undefined)
  })

  it('refuses a locators directory that is a symlink out, and a manifest that is one', async () => {
    const a = await exported('locators-link')
    await linkOut(join(a.v1, 'locators'), 'locators-link')
    await assert.rejects(importIndex(a.dir, a.target, { trustedKeys: [] }), refused)
    const b = await exported('manifest-link')
    await linkOut(join(b.v1, 'SHA256SUMS'), 'manifest-link')
    await assert.rejects(importIndex(b.dir, b.target, { trustedKeys: [] }), refused)
  })

  it('follows a symlink that stays inside the export', async () => {
    const { dir, v1, target } = await exported('inside-link')
    await rename(join(v1, 'narinfo', hashPart), join(dir, 'kept.narinfo'))
    await symlink(join(dir, 'kept.narinfo'), join(v1, 'narinfo', hashPart))
    assert.equal((await importIndex(dir, target, { trustedKeys: [] })).narInfos, 1)
  })

  it('a manifest line with .. or an encoded form names no file', async () => {
    for (const bad of ['narinfo/../../x', 'narinfo/%2e%2e%2fx', 'locators/..%2fx']) {
      const { dir, v1, target } = await exported(`dots-${randomBytes(3).toString('hex')}`)
      await writeFile(join(v1, 'SHA256SUMS'), `${'0'.repeat(64)}  ${bad}\n`)
      await assert.rejects(importIndex(dir, target, { trustedKeys: [] }), /unexpected line/, bad)
    }
  })
})
