/**
 * Chunk files as peers exchange them: `decodeChunkFile` takes from a peer only what this store
 * would write itself, and a store fills another with its chunk files as they are stored, so a
 * compressed chunk is not compressed again and lands on disk byte for byte as it came.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { constants, createZstdCompress, zstdCompressSync } from 'node:zlib'
import { ChunkFileError, decodeChunkFile, encodeChunk, RAW, ZSTD } from '../../src/chunk/chunk-file.ts'
import { chunkIdOf } from '../../src/chunk/files.ts'
import { rawFrame } from '../../src/nix/zstd-frames.ts'
import { collect } from '../helpers/bytes.ts'
import { identity, openStore, overwriteRecord, readRecord } from './helpers.ts'

const text = Buffer.from('a chunk of text, compressible text, '.repeat(2000))
const file = (flag: number, body: Uint8Array): Buffer => Buffer.concat([Uint8Array.of(flag), body])

/** A zstd frame whose header asks for a window of 4 MiB (no content size: a stream's frame). */
async function wideWindowFrame (bytes: Uint8Array): Promise<Buffer> {
  const z = createZstdCompress({ params: { [constants.ZSTD_c_windowLog]: 22 } })
  const out: Buffer[] = []
  z.on('data', (b: Buffer) => out.push(b))
  const ended = new Promise(resolve => z.on('end', resolve))
  for (let o = 0; o < bytes.length; o += 8192) z.write(bytes.subarray(o, o + 8192))
  z.end()
  await ended
  return Buffer.concat(out)
}

test('decodeChunkFile: raw and compressed files as the store writes them', () => {
  const random = randomBytes(70_000)
  const raw = encodeChunk(random)
  assert.equal(raw.flag, RAW)
  assert.ok(Buffer.from(decodeChunkFile(file(raw.flag, raw.body), random.length, true)).equals(random))
  const packed = encodeChunk(text)
  assert.equal(packed.flag, ZSTD)
  assert.ok(Buffer.from(decodeChunkFile(file(packed.flag, packed.body), text.length, true)).equals(text))
})

test('decodeChunkFile from a peer refuses what this store would not write', async () => {
  const body = zstdCompressSync(text)
  const refused: Array<[string, Uint8Array, number]> = [
    ['a raw file of another size', file(RAW, text.subarray(1)), text.length],
    ['an unknown header', file(7, body), text.length],
    ['a header alone', Uint8Array.of(ZSTD), text.length],
    ['a compressed file larger than the chunk', file(ZSTD, Buffer.concat(rawFrame(text))), text.length],
    ['a frame of other bytes', file(ZSTD, zstdCompressSync(text.subarray(10))), text.length],
    ['a frame cut short', file(ZSTD, body.subarray(0, body.length - 3)), text.length],
    ['a second frame after the first', file(ZSTD, Buffer.concat([zstdCompressSync(text.subarray(0, 100)), zstdCompressSync(text.subarray(100))])), text.length],
    ['a skippable frame after it', file(ZSTD, Buffer.concat([body, Buffer.from([0x50, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 0])])), text.length],
    ['a skippable frame before it', file(ZSTD, Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 0]), body])), text.length],
    ['a window of 4 MiB', file(ZSTD, await wideWindowFrame(text)), text.length]
  ]
  for (const [what, bytes, size] of refused) {
    assert.throws(() => decodeChunkFile(bytes, size, true), ChunkFileError, what)
  }
  // The store's own files are trusted to be what it wrote: the window check is for peers only.
  assert.ok(Buffer.from(decodeChunkFile(file(ZSTD, await wideWindowFrame(text)), text.length)).equals(text))
})

test('a store fills another with its chunk files as stored: compressed ones land byte for byte, and bad ones are not handed out', async () => {
  const a = await openStore()
  const b = await openStore()
  const nar = Buffer.concat([text, randomBytes(300_000), text, text])
  const m = await a.ingest(identity(nar), (async function * () { yield nar })())
  let compressed = 0
  for (const c of m.chunks) {
    const stored = (await a.readStoredChunk(c.id))!
    assert.ok(Buffer.from(stored).equals(readRecord(a, c.id)), 'the record as it is')
    const bytes = decodeChunkFile(stored, c.size, true)
    if (stored[0] === ZSTD) compressed++
    await b.putChunk(c.id, bytes, stored[0] === ZSTD ? { compressed: stored.subarray(1) } : {})
    assert.ok(readRecord(b, c.id).equals(Buffer.from(stored)), 'stored as it came')
  }
  assert.ok(compressed > 0 && compressed < m.chunks.length, `${compressed} of ${m.chunks.length} compressed`)
  await b.commitManifest(m, identity(nar))
  assert.ok((await collect(b.render(m.narHash)!)).equals(nar))
  assert.equal(await a.readStoredChunk(chunkIdOf(Buffer.from('absent'))), undefined)
  // A chunk file gone bad, compressed or raw, is dropped with its NAR rather than handed to a peer.
  for (const c of [m.chunks.find(c => readRecord(b, c.id)[0] === RAW)!, m.chunks[0]!]) {
    // Each time the NAR is whole again, then one chunk file goes bad.
    for (const d of m.chunks) if (!b.has([d.id])[0]!) await b.putChunk(d.id, (await a.readChunk(d.id))!)
    await b.commitManifest(m, identity(nar))
    const bad = readRecord(b, c.id)
    bad[bad.length - 2]! ^= 1
    overwriteRecord(b, c.id, bad)
    assert.equal(await b.readStoredChunk(c.id), undefined, `header ${bad[0]}`)
    assert.deepEqual(b.has([c.id]), [false])
  }
  assert.equal(b.manifest(m.narHash), undefined)
  await a.close()
  await b.close()
})
