import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { DatabaseSync } from 'node:sqlite'
import { constants, zstdCompressSync, zstdDecompressSync } from 'node:zlib'
import { IntegrityError } from '../../src/errors.ts'
import { RAW, ZSTD } from '../../src/chunk/chunk-file.ts'
import { chunkIdOf, hexOf } from '../../src/chunk/files.ts'
import { ChunkIndex } from '../../src/chunk/index-db.ts'
import type { LocalChunkStore } from '../../src/chunk/store.ts'
import type { ChunkFrames, NarIdentity } from '../../src/chunk/types.ts'
import { findBinary } from '../../src/nix/compression.ts'
import { chunks } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { identity, openStore, overwriteRecord, readRecord } from './helpers.ts'

const noZstd = findBinary('zstd') === false ? 'the zstd program is not on PATH (.ci/run installs it)' : false
const TEXT = Buffer.from(Array.from({ length: 40000 }, (_, i) => `${i} the quick brown fox ${i % 13}\n`).join(''))
/** Text, then random bytes: chunks stored compressed and chunks stored raw. */
const NAR = Buffer.concat([TEXT, pseudoRandom('frames', 600_000)])

function unzstd (stream: Uint8Array): Buffer {
  const r = spawnSync('zstd', ['-dc'], { input: stream, maxBuffer: 64 << 20 })
  assert.equal(r.status, 0, String(r.stderr))
  return r.stdout
}

/** The zstd stream rendered, and the NAR bytes it stands for, up to a failure (rethrown). */
async function drain (store: LocalChunkStore, nar: NarIdentity, got: { stream: Uint8Array[], size: number } = { stream: [], size: 0 }): Promise<Buffer> {
  for await (const c of store.renderFrames(nar.narHash)! as AsyncIterable<ChunkFrames>) {
    got.stream.push(...c.frames)
    got.size += c.size
  }
  return Buffer.concat(got.stream)
}

function headers (store: LocalChunkStore, ids: Uint8Array[]): number[] {
  return ids.map(id => readRecord(store, id)[0]!)
}

test('a NAR rendered as zstd frames decodes to the NAR: compressed chunks as stored, raw ones framed', { skip: noZstd }, async () => {
  const store = await openStore()
  const m = await store.ingest(identity(NAR), chunks(NAR))
  const kinds = headers(store, m.chunks.map(c => c.id))
  assert.ok(kinds.includes(ZSTD) && kinds.includes(RAW), `both kinds of chunk file: ${kinds.join(',')}`)
  const stream = await drain(store, identity(NAR))
  assert.ok(unzstd(stream).equals(NAR))
  // The compressed chunks went out as they are on disk: the stream is smaller than the NAR.
  assert.ok(stream.length < NAR.length - TEXT.length / 2, `${stream.length} bytes for a NAR of ${NAR.length}`)
  assert.equal(store.renderFrames(identity(Buffer.from('absent')).narHash), undefined)
})

test('a compressed chunk whose file changed is caught by its stored hash: the NAR is dropped, nothing wrong goes out', { skip: noZstd }, async () => {
  const store = await openStore()
  const m = await store.ingest(identity(NAR), chunks(NAR))
  const at = headers(store, m.chunks.map(c => c.id)).indexOf(ZSTD, 1)
  assert.ok(at > 0, 'a compressed chunk after the first')
  const bytes = readRecord(store, m.chunks[at]!.id)
  // A change zstd itself would not notice: a literal byte of the compressed text.
  bytes[bytes.length - 8] = bytes[bytes.length - 8]! ^ 0x01
  overwriteRecord(store, m.chunks[at]!.id, bytes)
  const got = { stream: [] as Uint8Array[], size: 0 }
  await assert.rejects(drain(store, identity(NAR), got), IntegrityError)
  assert.equal(got.size, m.chunks.slice(0, at).reduce((n, c) => n + c.size, 0), 'every chunk before the bad one, and no more')
  assert.ok(unzstd(Buffer.concat(got.stream)).equals(NAR.subarray(0, got.size)))
  assert.equal(store.manifest(identity(NAR).narHash), undefined)
})

test('chunks indexed before stored hashes were kept are checked by decompressing them, and still go out as stored', { skip: noZstd }, async () => {
  const store = await openStore()
  const m = await store.ingest(identity(NAR), chunks(NAR))
  store.index.db.exec('UPDATE chunk SET stored_hash = NULL')
  assert.ok(unzstd(await drain(store, identity(NAR))).equals(NAR))
  const at = headers(store, m.chunks.map(c => c.id)).indexOf(ZSTD)
  const bytes = readRecord(store, m.chunks[at]!.id)
  bytes[bytes.length - 8] = bytes[bytes.length - 8]! ^ 0x01
  overwriteRecord(store, m.chunks[at]!.id, bytes)
  await assert.rejects(drain(store, identity(NAR)), IntegrityError)
  assert.equal(store.manifest(identity(NAR).narHash), undefined)
})

test('cache verify checks a compressed file against its stored hash too: the same bytes compressed otherwise are caught', async () => {
  const store = await openStore()
  const m = await store.ingest(identity(NAR), chunks(NAR))
  assert.deepEqual((await store.maintenance.verify()).bad, [])
  const at = headers(store, m.chunks.map(c => c.id)).indexOf(ZSTD)
  const id = m.chunks[at]!.id
  const original = readRecord(store, id)
  // Decompresses to the very same chunk, so only the stored hash can tell.
  const recompressed = zstdCompressSync(zstdDecompressSync(original.subarray(1)), { params: { [constants.ZSTD_c_compressionLevel]: 19 } })
  assert.ok(!recompressed.equals(original.subarray(1)) && recompressed.length < original.length)
  // Written in place, and the row told of its length (the rest of the old record stays behind it).
  overwriteRecord(store, id, Buffer.concat([Buffer.of(ZSTD), recompressed, original.subarray(1 + recompressed.length)]))
  store.index.db.prepare('UPDATE chunk SET stored_size = ? WHERE id = ?').run(1 + recompressed.length, id)
  assert.equal(hexOf(chunkIdOf(store.files.read({ ...store.index.chunk(id)!, hex: hexOf(id) }, false)!)), hexOf(id), 'its content still matches its id')
  // A read for a render checks the stored bytes, and catches it too.
  assert.throws(() => store.files.read({ ...store.index.chunk(id)!, hex: hexOf(id) }), /compressed bytes do not match/)
  const report = await store.maintenance.verify()
  assert.deepEqual(report.bad, [hexOf(m.chunks[at]!.id)])
  assert.equal(store.manifest(identity(NAR).narHash), undefined)
})

test('an index made before stored_hash and packs existed gains the columns and keeps its rows, each chunk in a file of its own', () => {
  const db = new DatabaseSync(':memory:')
  db.exec(`CREATE TABLE chunk (id BLOB PRIMARY KEY, size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
    refcount INTEGER NOT NULL, added_at INTEGER NOT NULL) STRICT, WITHOUT ROWID;
    INSERT INTO chunk VALUES (x'01', 10, 11, 1, 5);`)
  const index = new ChunkIndex(db)
  assert.deepEqual(index.chunk(Uint8Array.of(1)), { size: 10, storedSize: 11, refcount: 1, storedHash: undefined, pack: undefined, offset: 0 })
  index.addChunk(Uint8Array.of(2), 20, 12, 6, Uint8Array.of(9, 9))
  assert.deepEqual(index.chunk(Uint8Array.of(2))?.storedHash, Uint8Array.of(9, 9))
  // Opening it again finds the column there.
  assert.equal(new ChunkIndex(db).chunk(Uint8Array.of(1))?.size, 10)
})
