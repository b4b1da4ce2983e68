/**
 * The chunk writer: what lands on disk is the chunk file the reader expects, the caller's buffer
 * is free as soon as `write` returns (also when it had to wait for a slot), chunks larger than a
 * slot go through too, errors come back with the system's code, and closing waits for what is
 * pending.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { zstdDecompressSync } from 'node:zlib'
import { chunkPath, ZSTD } from '../../src/chunk/chunk-file.ts'
import { ChunkWriter } from '../../src/chunk/chunk-writer.ts'
import { tempDir } from '../helpers/temp.ts'

function dirsIn (root: string): { root: string, tmp: string, fsync: boolean } {
  mkdirSync(join(root, 'tmp'), { recursive: true })
  return { root, tmp: join(root, 'tmp'), fsync: true }
}

const hexOf = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

function contents (file: Buffer): Buffer {
  assert.ok(file[0] === 0 || file[0] === 1, `header ${file[0]}`)
  return file[0] === 0 ? file.subarray(1) : zstdDecompressSync(file.subarray(1))
}

test('many chunks at once, a reused caller buffer, one larger than a slot: every file is whole', async () => {
  const dirs = dirsIn(tempDir('narswarm-writer-'))
  const writer = new ChunkWriter(dirs)
  const chunks = [
    ...Array.from({ length: 60 }, (_, i) => i % 2 === 0 ? randomBytes(70_000) : Buffer.alloc(50_000, i)),
    randomBytes(600_000), Buffer.alloc(1, 7), Buffer.alloc(0)
  ]
  // The caller's buffer is overwritten right after each call returns, as the chunker does.
  const reused = Buffer.alloc(600_000)
  const writes = chunks.map(c => {
    c.copy(reused)
    const p = writer.write(hexOf(c), reused.subarray(0, c.length))
    reused.fill(0xee)
    return p
  })
  const stored = await Promise.all(writes)
  await writer.close()
  for (const [i, c] of chunks.entries()) {
    const file = readFileSync(chunkPath(dirs.root, hexOf(c)))
    assert.equal(file.length, stored[i]!.storedSize)
    assert.ok(contents(file).equals(c), `chunk ${i} (${c.length} bytes)`)
    // The hash a compressed file's body is checked against on reading, and only then.
    if (file[0] === ZSTD) assert.ok(createHash('sha256').update(file.subarray(1)).digest().equals(stored[i]!.storedHash!), `chunk ${i}'s stored hash`)
    else assert.equal(stored[i]!.storedHash, undefined)
  }
  assert.ok(stored[1]!.storedSize < 50_000 / 2, 'a compressible chunk is stored compressed')
  assert.equal(stored[0]!.storedSize, 70_001, 'random bytes are stored as they are')
  assert.deepEqual(readdirSync(dirs.tmp), [])
})

test('a write that fails comes back with its system error code; the writer goes on', async () => {
  const root = tempDir('narswarm-writer-')
  const writer = new ChunkWriter({ root, tmp: join(root, 'no-such-dir'), fsync: false })
  await assert.rejects(writer.write(hexOf(Buffer.from('a')), Buffer.from('a')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT')
  mkdirSync(join(root, 'no-such-dir'))
  assert.equal((await writer.write(hexOf(Buffer.from('b')), Buffer.from('b'))).storedSize, 2)
  await writer.close()
})

test('close waits for pending writes; a write after close is refused', async () => {
  const dirs = dirsIn(tempDir('narswarm-writer-'))
  const writer = new ChunkWriter(dirs)
  const chunks = Array.from({ length: 40 }, () => randomBytes(100_000))
  const writes = chunks.map(async c => await writer.write(hexOf(c), c))
  await writer.close()
  assert.equal((await Promise.allSettled(writes)).filter(r => r.status === 'fulfilled').length, chunks.length)
  for (const c of chunks) assert.ok(contents(readFileSync(chunkPath(dirs.root, hexOf(c)))).equals(c))
  await assert.rejects(writer.write(hexOf(chunks[0]!), chunks[0]!), /closed/)
})
