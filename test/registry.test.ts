/**
 * Specs across every scheme, through the registry: each valid spec loads its plug-in and parses;
 * each invalid one is a ConfigError that names the problem. (Each plug-in's own table tests go
 * deeper; this pins the registry's routing and its errors.)
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BACKEND_SCHEMES, MAPPER_SCHEMES, checkSpec, openBackend, openMapper } from '../src/registry.ts'
import { silentLogger } from '../src/log.ts'

test('valid specs of every scheme are accepted', async () => {
  const mappers = ['sqlite:', 'sqlite:///var/lib/narswarm/index.db', 'folder:///srv/nss-map', 'http+https://index.example/v1', 'http+http://127.0.0.1:8080', 'exec:///usr/local/bin/my-mapper?timeout=5s']
  const backends = ['file:///srv/nars', 'mirror+https://a.example/,https://b.example/', 's3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1', 'exec:///usr/bin/fetcher', 'torrent:?dht=false&tracker=udp://t.example:6969']
  for (const spec of mappers) await checkSpec(spec, 'mapper')
  for (const spec of backends) await checkSpec(spec, 'backend')
  assert.deepEqual([...MAPPER_SCHEMES].sort(), ['exec', 'folder', 'http', 'sqlite'])
  assert.deepEqual([...BACKEND_SCHEMES].sort(), ['exec', 'file', 'ipfs', 'mirror', 's3', 'torrent'])
})

test('invalid specs are ConfigErrors that say what is wrong', async () => {
  const cases: Array<[string, 'mapper' | 'backend', RegExp]> = [
    ['not a spec', 'mapper', /is not a URL-style spec/],
    ['redis://x', 'mapper', /unknown mapper scheme 'redis'.*known: sqlite, folder, http, exec/],
    ['gopher+ftp://x', 'backend', /unknown backend scheme 'gopher'/],
    ['s3://user:secret@bucket/x?token=abc', 'mapper', /unknown mapper scheme 's3' in 's3:\/\/bucket\/x'/],
    ['folder:relative/dir', 'mapper', /is relative/],
    ['file:///srv/nars?colour=blue', 'backend', /colour/],
    ['mirror+https://only-one.example/', 'backend', /two or more mirrors/]
  ]
  for (const [spec, kind, message] of cases) {
    await assert.rejects(checkSpec(spec, kind), (err: Error) => err.name === 'ConfigError' && message.test(err.message) && !err.message.includes('secret'), spec)
  }
})

test('openMapper and openBackend create working instances', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-registry-'))
  try {
    const components = { log: silentLogger(), stateDir: dir }
    const mapper = await openMapper('sqlite:', components)
    assert.deepEqual(await mapper.lookup((await import('../src/nix/hash.ts')).NixHash.of('sha256', 'x')), [])
    await mapper.close?.()
    const backend = await openBackend(`file://${dir}/nars`, components)
    assert.ok(backend.schemes.includes('file'))
    await backend.close?.()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a relative path in any spec is a ConfigError showing the absolute form, and nothing is created', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-relative-'))
  const cwd = process.cwd()
  process.chdir(dir)
  try {
    const cases: Array<[string, 'mapper' | 'backend', string]> = [
      ['file:nars', 'backend', `file://${dir}/nars`],
      ['file:./nars?compression=xz', 'backend', `file://${dir}/nars?compression=xz`],
      ['file:../nars', 'backend', `file://${join(dir, '..', 'nars')}`],
      ['file:%2e%2e/nars', 'backend', `file://${join(dir, '..', 'nars')}`],
      ['folder:map', 'mapper', `folder://${dir}/map`],
      ['sqlite:index.db', 'mapper', `sqlite://${dir}/index.db`],
      ['exec:bin/mapper', 'mapper', `exec://${dir}/bin/mapper`],
      ['exec:fetcher', 'backend', `exec://${dir}/fetcher`],
      ['torrent:torrents?dht=false', 'backend', `torrent://${dir}/torrents?dht=false`],
      ['ipfs:?path=repo', 'backend', `path=${dir}/repo`]
    ]
    for (const [spec, kind, absolute] of cases) {
      await assert.rejects(kind === 'mapper' ? openMapper(spec, { log: silentLogger(), stateDir: dir }) : openBackend(spec, { log: silentLogger(), stateDir: dir }),
        (err: Error) => err.name === 'ConfigError' && err.message.includes('relative') && err.message.includes(absolute), spec)
    }
    for (const [spec, kind] of [['file:%zz', 'backend'], ['folder:%zz', 'mapper'], ['folder:///srv/%zz', 'mapper'], ['exec:///usr/bin/%zz', 'backend'], ['torrent:///srv/%zz', 'backend']] as const) {
      await assert.rejects(kind === 'mapper' ? openMapper(spec, { log: silentLogger(), stateDir: dir }) : openBackend(spec, { log: silentLogger(), stateDir: dir }),
        (err: Error) => err.name === 'ConfigError', spec)
    }
    // `file:nars` used to be read as /nars, and the backend made that directory at the root.
    await assert.rejects(stat('/nars'), { code: 'ENOENT' })
    await assert.rejects(stat(join(dir, 'nars')), { code: 'ENOENT' })
  } finally {
    process.chdir(cwd)
    await rm(dir, { recursive: true, force: true })
  }
})
