import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync, unlinkSync, mkdirSync, utimesSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createHash } from 'node:crypto'
import { zstdDecompressSync } from 'node:zlib'
import { setTimeout as sleep } from 'node:timers/promises'
import { IntegrityError, StorageError } from '../../src/errors.ts'
import { FAN_OUT, hexOf } from '../../src/chunk/files.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'
import { chunks, collect } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { runNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { identity, openStore } from './helpers.ts'

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
  const file = store.files.path(hexOf(victim.id))
  const stored = readFileSync(file)
  stored[stored.length >> 1] = stored[stored.length >> 1]! ^ 0x40
  writeFileSync(file, stored)
  const got: Buffer[] = []
  await assert.rejects(async () => { for await (const c of store.render(identity(random).narHash)!) got.push(Buffer.from(c)) }, IntegrityError)
  // What came out before the failure is a correct prefix, nothing else.
  assert.ok(random.subarray(0, Buffer.concat(got).length).equals(Buffer.concat(got)))
  assert.equal(store.manifest(identity(random).narHash), undefined)
  assert.equal(store.manifest(identity(sharing).narHash), undefined)
  assert.equal(existsSync(file), false)
  assert.equal(await store.readChunk(victim.id), undefined)
  assert.ok(store.manifest(identity(TEXT).narHash) !== undefined, 'an unrelated NAR stays')
  // A compressed chunk (text compresses) that is corrupted is refused the same way, by readChunk too.
  const textChunk = text.chunks[0]!
  const textFile = store.files.path(hexOf(textChunk.id))
  assert.equal(readFileSync(textFile)[0], 1, 'stored zstd-compressed')
  const z = readFileSync(textFile)
  z[10] = z[10]! ^ 0xff
  writeFileSync(textFile, z)
  assert.equal(await store.readChunk(textChunk.id), undefined)
  assert.equal(store.manifest(identity(TEXT).narHash), undefined)
  await store.close()
})

test('start-up check: temporary files, unknown files and index rows without a file are removed', async () => {
  const dir = tempDir('narswarm-chunk-')
  const db = openDatabase(stateDatabase(dir))
  let store = await openStore({ dir, db })
  const a = pseudoRandom('kept', 500_000)
  const b = pseudoRandom('lost', 500_000)
  await store.ingest(identity(a), chunks(a))
  const mb = await store.ingest(identity(b), chunks(b))
  await store.close()
  unlinkSync(store.files.path(hexOf(mb.chunks[0]!.id)))
  writeFileSync(join(store.files.tmp, '999999999-dead.tmp'), 'half')
  // Files the index does not know, old enough that no other process can be indexing them: a
  // chunk file, something else in a fan-out directory, something else beside them.
  const unknownChunk = store.files.path('ff'.repeat(32))
  const strays = [unknownChunk, join(store.files.root, 'ab', 'notes.txt'), join(store.files.root, 'junk')]
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
  assert.deepEqual(readdirSync(store.files.tmp), [])
  for (const file of strays) assert.equal(existsSync(file), false, file)
  assert.equal(existsSync(fresh), true)
  assert.equal(store.manifest(identity(b).narHash), undefined)
  assert.ok((await collect(store.render(identity(a).narHash)!)).equals(a))
  assert.deepEqual((await store.verify()).bad, [])
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
    assert.deepEqual(readdirSync(store.files.tmp), [])
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
  mkdirSync(join(dir, 'chunks', 'tmp'), { recursive: true })
  const chunkFiles = readdirSync(join(dir, 'chunks')).filter(d => d !== 'tmp').length
  assert.ok(chunkFiles > 10, 'chunks were written before the kill')
  const store = await openStore({ dir, orphanGrace: 0 })
  assert.equal(store.manifest(identity(pseudoRandom('cut', 64 << 20)).narHash), undefined)
  assert.equal(store.render(identity(pseudoRandom('cut', 64 << 20)).narHash), undefined)
  const committed = pseudoRandom('committed', 400_000)
  assert.ok((await collect(store.render(identity(committed).narHash)!)).equals(committed))
  assert.equal(store.stats().nars, 1)
  // The chunks the cut ingest had indexed belong to no NAR: the start-up check removed them.
  const kept = store.manifest(identity(committed).narHash)!.chunks.length
  assert.equal(store.stats().chunks, kept)
  // A chunk renamed into place just before the kill, its index row not yet written, stays on disk
  // for a grace period (another process may be indexing it); such a file is whole, never torn.
  const onDisk = new Set<string>()
  for (const dir of FAN_OUT) for (const hex of (await store.files.listDir(dir)).chunks) onDisk.add(hex)
  assert.ok(onDisk.size >= kept)
  const indexed = new Set(store.manifest(identity(committed).narHash)!.chunks.map(c => hexOf(c.id)))
  for (const hex of onDisk) {
    if (indexed.has(hex)) continue
    const file = readFileSync(store.files.path(hex))
    assert.ok(file[0] === 0 || file[0] === 1, `chunk file ${hex} has a header`)
    const bytes = file[0] === 0 ? file.subarray(1) : zstdDecompressSync(file.subarray(1))
    assert.equal(createHash('sha256').update(bytes).digest('hex'), hex)
  }
  assert.deepEqual(readdirSync(store.files.tmp), [])
  await store.close()
  const verify = await runNarswarm(['cache', 'verify', '--state-dir', dir])
  assert.equal(verify.code, 0, verify.stderr)
  assert.match(verify.stdout, /0 bad/)
})
