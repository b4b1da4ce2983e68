import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseCacheInfo, serializeCacheInfo } from '../../src/nix/cache-info.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'

test('serializeCacheInfo writes the three fields, one per line', () => {
  assert.equal(serializeCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 40 }), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n')
  assert.equal(serializeCacheInfo({ storeDir: '/nix/store', wantMassQuery: false, priority: -3 }), 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: -3\n')
  assert.equal(serializeCacheInfo({ storeDir: '/nix/store' }), 'StoreDir: /nix/store\n')
  assert.throws(() => serializeCacheInfo({ storeDir: '/nix/store', priority: 1.5 }), { name: 'FormatError', message: /32-bit integer/ })
  assert.throws(() => serializeCacheInfo({ storeDir: '/nix/store\nPriority: 1' }), { name: 'FormatError', message: /invalid StoreDir/ })
})

test('parseCacheInfo reads what it writes and the nix-serve example', () => {
  assert.deepEqual(parseCacheInfo(serializeCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 40 })),
    { storeDir: '/nix/store', wantMassQuery: true, priority: 40, extra: {} })
  assert.deepEqual(parseCacheInfo('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n'),
    { storeDir: '/nix/store', wantMassQuery: true, priority: 30, extra: {} })
})

test('parseCacheInfo follows Nix: skip lines without ":", trim values only, only "1" is true', () => {
  const info = parseCacheInfo('junk line\r\n\nStoreDir:/gnu/store  \r\nWantMassQuery: true\nPriority:\t7 \nX-Thing: a:b\n StoreDir: /not/read\n__proto__: x\n')
  assert.equal(info.storeDir, '/gnu/store')
  assert.equal(info.wantMassQuery, false)
  assert.equal(info.priority, 7)
  assert.equal(info.extra['X-Thing'], 'a:b')
  // The key is not trimmed, so " StoreDir" is another key.
  assert.equal(info.extra[' StoreDir'], '/not/read')
  assert.equal(info.extra['__proto__'], 'x')
  assert.deepEqual(parseCacheInfo(''), { wantMassQuery: false, extra: {} })
  assert.equal(parseCacheInfo('WantMassQuery: 1\nWantMassQuery: 0\n').wantMassQuery, false, 'last wins')
  assert.equal(parseCacheInfo('WantMassQuery:  1 \n').wantMassQuery, true)
})

test('a Priority that is not an integer is a FormatError (Nix\'s stoi would throw)', () => {
  for (const bad of ['Priority: high\n', 'Priority: \n', 'Priority: 1.5\n', 'Priority: 12abc\n', 'Priority: 99999999999\n']) {
    assert.throws(() => parseCacheInfo(bad), { name: 'FormatError', message: /nix-cache-info Priority/ }, bad)
  }
  assert.equal(parseCacheInfo('Priority: +5\n').priority, 5)
  assert.equal(parseCacheInfo('Priority: -5\n').priority, -5)
})

test('Nix 2.8 reads what we write and writes what we read', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const file = join(nix.dir, 'f.txt')
    await writeFile(file, `cache-info ${randomBytes(8).toString('hex')}\n`)
    const path = (await nix.run('nix-store', ['--add', file])).trim()
    const cache = join(nix.dir, 'cache')
    await nix.run('nix', ['copy', '--to', `file://${cache}?compression=none`, path])
    const written = await readFile(join(cache, 'nix-cache-info'), 'utf8')
    assert.equal(parseCacheInfo(written).storeDir, '/nix/store')

    await writeFile(join(cache, 'nix-cache-info'), serializeCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 40 }))
    await nix.run('nix', ['path-info', '--store', `file://${cache}`, path])

    // A cache for another store dir is refused, so Nix does read the field we write.
    const other = join(nix.dir, 'other')
    await nix.run('nix', ['copy', '--to', `file://${other}?compression=none`, path])
    await writeFile(join(other, 'nix-cache-info'), serializeCacheInfo({ storeDir: '/gnu/store', wantMassQuery: true, priority: 40 }))
    const r = await nix.tryRun('nix', ['path-info', '--store', `file://${other}`, path])
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /is for Nix stores with prefix '\/gnu\/store'/)
  } finally {
    await nix.cleanup()
  }
})
