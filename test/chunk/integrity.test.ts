import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync, utimesSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { IntegrityError, StorageError } from '../../src/errors.ts'
import { hexOf } from '../../src/chunk/files.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { runNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { corruptRecord, cutBefore, identity, openStore, overwriteRecord, readRecord, tempFiles } from './helpers.ts'

const TEXT = Buffer.from(Array.from({ length: 60000 }, (_, i) => `${i} the quick brown fox ${i % 13}\n`).join(''))

test('a corrupt chunk is detected on reading: the render fails, never with wrong bytes, and every NAR needing it is dropped', async () => {
  const store = await openStore()
  const random = pseudoRandom('corrupt', 1_000_000)
  // A second NAR that shares the first NAR's chunks (same prefix).
  const sharing = Buffer.concat([random, pseudoRandom('tail', 200_000)])
  const m = await store.ingest(identity(random), chunks(random))
  await store.ingest(identity(sharing), chunks(sharing))
  const text = await store.ingest(identity(TEXT), chunks(TEXT))
  const victim = m.chunks[1]!
  const stored = readRecord(store, victim.id)
  stored[stored.length >> 1] = stored[stored.length >> 1]! ^ 0x40
  overwriteRecord(store, victim.id, stored)
  const got: Buffer[] = []
  await assert.rejects(async () => { for await (const c of store.render(identity(random).narHash)!) got.push(Buffer.from(c)) }, IntegrityError)
  // What came out before the failure is a correct prefix, nothing else.
  assert.ok(random.subarray(0, Buffer.concat(got).length).equals(Buffer.concat(got)))
  assert.equal(store.manifest(identity(random).narHash), undefined)
  assert.equal(store.manifest(identity(sharing).narHash), undefined)
  assert.equal(store.index.chunk(victim.id), undefined, 'the chunk is out of the index')
  assert.equal(await store.readChunk(victim.id), undefined)
  assert.ok(store.manifest(identity(TEXT).narHash) !== undefined, 'an unrelated NAR stays')
  // A compressed chunk (text compresses) that is corrupted is refused the same way, by readChunk too.
  const textChunk = text.chunks[0]!
  const z = readRecord(store, textChunk.id)
  assert.equal(z[0], 1, 'stored zstd-compressed')
  z[10] = z[10]! ^ 0xff
  overwriteRecord(store, textChunk.id, z)
  assert.equal(await store.readChunk(textChunk.id), undefined)
  assert.equal(store.manifest(identity(TEXT).narHash), undefined)
  await store.close()
})

test('start-up check: temporary files, unknown files and index rows without their bytes are removed', async () => {
  const dir = tempDir('narswarm-chunk-')
  const db = openDatabase(stateDatabase(dir))
  let store = await openStore({ dir, db })
  const a = pseudoRandom('kept', 500_000)
  const b = pseudoRandom('lost', 500_000)
  await store.ingest(identity(a), chunks(a))
  const mb = await store.ingest(identity(b), chunks(b))
  await store.close()
  // The pack cut short where b's records start (a disk that lost the end of a file).
  cutBefore(store, mb.chunks[0]!.id)
  // A temporary file an older narswarm left behind.
  mkdirSync(store.files.tmp, { recursive: true })
  writeFileSync(join(store.files.tmp, '999999999-dead.tmp'), 'half')
  // A pack file the index does not name is removed whatever its age: a pack's row is made before its file.
  const unknownPack = store.files.packPath(999)
  writeFileSync(unknownPack, 'x')
  // Files the index does not know, old enough that no other process can be indexing them: a
  // chunk file of the layout before packs, something else in a fan-out directory, in the packs
  // directory, beside them.
  const unknownChunk = store.files.path('ff'.repeat(32))
  const strays = [unknownChunk, join(store.files.root, 'ab', 'notes.txt'), join(store.files.packs, 'notes.txt'), join(store.files.root, 'junk')]
  const hourAgo = new Date(Date.now() - 3_600_000)
  for (const file of strays) {
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, 'x')
    utimesSync(file, hourAgo, hourAgo)
  }
  // One just written: it may be another process's, indexed a moment later.
  const fresh = store.files.path('fe'.repeat(32))
  mkdirSync(dirname(fresh), { recursive: true })
  writeFileSync(fresh, 'x')
  store = await openStore({ dir, db })
  assert.deepEqual(tempFiles(store), [])
  assert.equal(existsSync(store.files.tmp), false, 'the layout before packs needed it, packs do not')
  for (const file of [...strays, unknownPack]) assert.equal(existsSync(file), false, file)
  assert.equal(existsSync(fresh), true)
  assert.equal(store.manifest(identity(b).narHash), undefined)
  assert.ok((await collect(store.render(identity(a).narHash)!)).equals(a))
  assert.deepEqual((await store.verify()).bad, [])
  await store.close()
})

test('a store made before packs: chunks in files of their own are read, checked, dropped and removed as before', async () => {
  const dir = tempDir('narswarm-chunk-')
  const db = openDatabase(stateDatabase(dir))
  let store = await openStore({ dir, db })
  const old = pseudoRandom('old layout', 600_000)
  const other = Buffer.concat([TEXT, pseudoRandom('other', 100_000)])
  const m = await store.ingest(identity(old), chunks(old))
  const mo = await store.ingest(identity(other), chunks(other))
  // Each record moved into a file of its own, as the layout before packs kept it.
  for (const c of [...m.chunks, ...mo.chunks]) {
    const file = store.files.path(hexOf(c.id))
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, readRecord(store, c.id))
  }
  await store.close()
  db.exec('UPDATE chunk SET pack = NULL, pack_offset = NULL; DELETE FROM chunk_pack')
  for (const f of readdirSync(store.files.packs)) rmSync(join(store.files.packs, f))
  store = await openStore({ dir, db })
  assert.equal(store.stats().nars, 2, 'the start-up check finds every file')
  assert.ok((await collect(store.render(identity(old).narHash)!)).equals(old))
  assert.ok((await collect(store.render(identity(other).narHash)!)).equals(other))
  assert.deepEqual((await store.verify()).bad, [])
  // A bad file is found on reading; its chunk and file go, with the NAR.
  const victim = m.chunks[2]!
  corruptRecord(store, victim.id)
  await assert.rejects(collect(store.render(identity(old).narHash)!), IntegrityError)
  assert.equal(existsSync(store.files.path(hexOf(victim.id))), false)
  assert.equal(store.manifest(identity(old).narHash), undefined)
  // Dropping the NAR removes the files only it used; new chunks go into a pack.
  await store.ingest(identity(old), chunks(old))
  assert.equal(store.index.chunk(victim.id)!.pack !== undefined, true)
  await store.maintenance.dropNar(identity(other).narHash.digest)
  for (const c of mo.chunks) assert.equal(existsSync(store.files.path(hexOf(c.id))), false)
  assert.ok((await collect(store.render(identity(old).narHash)!)).equals(old))
  await store.close()
})

test('a full disk during an ingest is one StorageError, and nothing half-written remains', async (t) => {
  const dir = tempDir('narswarm-chunk-')
  const state = join(dir, 'state')
  mkdirSync(state)
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', state], { encoding: 'utf8' })
  if (mounted.status !== 0) { t.skip(`cannot mount a small tmpfs (needs root): ${mounted.stderr.trim()}`); return }
  try {
    // The database elsewhere: only the chunk files run out of space.
    const store = await openStore({ dir: state, db: openDatabase(stateDatabase(dir)) })
    const small = pseudoRandom('fits', 100_000)
    await store.ingest(identity(small), chunks(small))
    const big = pseudoRandom('too big', 3_000_000)
    await assert.rejects(store.ingest(identity(big), chunks(big)), (err: Error) => {
      assert.ok(err instanceof StorageError, String(err))
      assert.equal(err.code, 'ENOSPC')
      assert.ok((err.cause as NodeJS.ErrnoException).code === 'ENOSPC')
      return true
    })
    assert.equal(store.manifest(identity(big).narHash), undefined)
    assert.deepEqual(tempFiles(store), [])
    assert.equal(store.stats().chunks, 1, 'only the chunk of the NAR that fitted')
    assert.ok((await collect(store.render(identity(small).narHash)!)).equals(small))
    await store.close()
  } finally {
    spawnSync('umount', [state])
  }
})

const CHILD = `
import { openDatabase, stateDatabase } from ${JSON.stringify(new URL('../../src/util/sqlite.ts', import.meta.url).pathname)}
import { LocalChunkStore } from ${JSON.stringify(new URL('../../src/chunk/store.ts', import.meta.url).pathname)}
import { NixHash } from ${JSON.stringify(new URL('../../src/nix/hash.ts', import.meta.url).pathname)}
import { pseudoRandom } from ${JSON.stringify(new URL('../helpers/pseudo-random.ts', import.meta.url).pathname)}
const dir = process.argv[2]
const store = await LocalChunkStore.open({ db: openDatabase(stateDatabase(dir)), dir })
const done = pseudoRandom('committed', 400_000)
await store.ingest({ narHash: NixHash.of('sha256', done), narSize: done.length }, [done])
const big = pseudoRandom('cut', 64 << 20)
async function * slow () {
  for (let o = 0; o < big.length; o += 1 << 20) {
    if (o === 8 << 20) process.stdout.write('writing\\n')
    yield big.subarray(o, o + (1 << 20))
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
await store.ingest({ narHash: NixHash.of('sha256', big), narSize: big.length }, slow())
process.stdout.write('finished\\n')
`

test('kill -9 in the middle of an ingest: after restart nothing half-written is served and cache verify is clean', async () => {
  const dir = tempDir('narswarm-chunk-')
  const script = join(dir, 'child.ts')
  writeFileSync(script, CHILD)
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('writing')) resolve() })
    child.once('exit', code => reject(new Error(`child exited early (${code}): ${out}`)))
  })
  await sleep(100)
  child.kill('SIGKILL')
  await new Promise(resolve => child.once('exit', resolve))
  assert.doesNotMatch(out, /finished/)
  const packBytes = (): number => readdirSync(join(dir, 'chunks', 'packs')).reduce((n, f) => n + statSync(join(dir, 'chunks', 'packs', f)).size, 0)
  const written = packBytes()
  assert.ok(written > 8 << 20, `chunks were written before the kill (${written} bytes)`)
  const store = await openStore({ dir, orphanGrace: 0 })
  assert.equal(store.manifest(identity(pseudoRandom('cut', 64 << 20)).narHash), undefined)
  assert.equal(store.render(identity(pseudoRandom('cut', 64 << 20)).narHash), undefined)
  const committed = pseudoRandom('committed', 400_000)
  assert.ok((await collect(store.render(identity(committed).narHash)!)).equals(committed))
  assert.equal(store.stats().nars, 1)
  // The chunks the cut ingest had indexed belong to no NAR: the start-up check removed them.
  const kept = store.manifest(identity(committed).narHash)!.chunks.length
  assert.equal(store.stats().chunks, kept)
  // The records the cut ingest wrote stay in the pack, counted as bytes on disk, until the pack
  // is reclaimed: `cache gc` then keeps only what the committed NAR uses.
  assert.equal(store.stats().storedBytes, written)
  await store.close()
  const gc = await runNarswarm(['cache', 'gc', '--state-dir', dir])
  assert.equal(gc.code, 0, gc.stderr)
  const after = await openStore({ dir })
  const used = after.manifest(identity(committed).narHash)!.chunks.reduce((n, c) => n + after.index.chunk(c.id)!.storedSize, 0)
  assert.equal(after.stats().storedBytes, used)
  assert.equal(packBytes(), used)
  assert.ok((await collect(after.render(identity(committed).narHash)!)).equals(committed))
  await after.close()
  const verify = await runNarswarm(['cache', 'verify', '--state-dir', dir])
  assert.equal(verify.code, 0, verify.stderr)
  assert.match(verify.stdout, /0 bad/)
})
