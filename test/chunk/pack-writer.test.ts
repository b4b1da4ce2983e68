/**
 * The pack writer: what lands in a pack is the record the reader expects, where `write` says; the
 * caller's buffer is free as soon as `write` returns (also when it had to wait for a slot); records
 * larger than a slot go through; a full pack gives way to a new one, and is sealed with its length;
 * errors come back with the system's code; closing waits for what is pending; a pack counts as
 * open until every record written into it was reported indexed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs, { mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { syncBuiltinESMExports } from 'node:module'
import { join } from 'node:path'
import { zstdDecompressSync } from 'node:zlib'
import { ZSTD } from '../../src/chunk/chunk-file.ts'
import { packPath, PackWriter, type PackRegistry } from '../../src/chunk/pack-writer.ts'
import { tempDir } from '../helpers/temp.ts'

function registry (): PackRegistry & { made: number[], sealed: Map<number, number> } {
  const made: number[] = []
  const sealed = new Map<number, number>()
  return { made, sealed, create: () => { made.push(made.length + 1); return made.length }, seal: (id, bytes) => { sealed.set(id, bytes) } }
}

function contents (record: Buffer): Buffer {
  assert.ok(record[0] === 0 || record[0] === 1, `header ${record[0]}`)
  return record[0] === 0 ? record.subarray(1) : zstdDecompressSync(record.subarray(1))
}

test('many chunks at once, a reused caller buffer, one larger than a slot, packs that fill: every record is whole where it was said to be', async () => {
  const dir = tempDir('narswarm-writer-')
  const packs = registry()
  const writer = new PackWriter({ dir, fsync: true, registry: packs, packBytes: 1 << 20 })
  const chunks = [
    ...Array.from({ length: 60 }, (_, i) => i % 2 === 0 ? randomBytes(70_000) : Buffer.alloc(50_000, i)),
    randomBytes(600_000), Buffer.alloc(1, 7), Buffer.alloc(0)
  ]
  // The caller's buffer is overwritten right after each call returns, as the chunker does.
  const reused = Buffer.alloc(600_000)
  const writes = chunks.map(c => {
    c.copy(reused)
    const p = writer.write(reused.subarray(0, c.length))
    reused.fill(0xee)
    return p
  })
  const stored = await Promise.all(writes)
  await writer.close()
  const files = new Map(packs.made.map(id => [id, readFileSync(packPath(dir, id))]))
  for (const [i, c] of chunks.entries()) {
    const { pack, offset, storedSize, storedHash } = stored[i]!
    const record = files.get(pack)!.subarray(offset, offset + storedSize)
    assert.ok(contents(record).equals(c), `chunk ${i} (${c.length} bytes)`)
    // The hash a compressed record's body is checked against on reading, and only then.
    if (record[0] === ZSTD) assert.ok(createHash('sha256').update(record.subarray(1)).digest().equals(storedHash!), `chunk ${i}'s stored hash`)
    else assert.equal(storedHash, undefined)
  }
  assert.ok(stored[1]!.storedSize < 50_000 / 2, 'a compressible chunk is stored compressed')
  assert.equal(stored[0]!.storedSize, 70_001, 'random bytes are stored as they are')
  // Past 1 MiB a pack gives way; every pack was sealed with the length of its file, records back to back.
  assert.ok(packs.made.length > 2, `${packs.made.length} packs`)
  assert.deepEqual([...packs.sealed.keys()].sort((a, b) => a - b), packs.made)
  for (const id of packs.made) {
    assert.equal(packs.sealed.get(id), statSync(packPath(dir, id)).size)
    const mine = stored.filter(s => s.pack === id).sort((a, b) => a.offset - b.offset)
    assert.equal(mine.reduce((n, s) => n + s.storedSize, 0), packs.sealed.get(id))
    assert.ok(id === packs.made.at(-1) || packs.sealed.get(id)! <= (1 << 20) || mine.length === 1, `pack ${id} overfull`)
  }
  assert.deepEqual(readdirSync(dir).sort(), packs.made.map(id => `${id}.pack`).sort())
})

test('a pack counts as open until its records are reported indexed, and can be retired only then', async () => {
  const dir = tempDir('narswarm-writer-')
  const writer = new PackWriter({ dir, fsync: false, registry: registry() })
  const a = await writer.write(randomBytes(1000))
  assert.equal(writer.activePack, a.pack)
  assert.equal(await writer.retire(a.pack), false, 'a record waits for its row')
  writer.indexed(a.pack)
  assert.ok(writer.isOpen(a.pack), 'still the active pack')
  assert.equal(await writer.retire(a.pack), true)
  assert.equal(writer.isOpen(a.pack), false)
  const b = await writer.write(randomBytes(1000))
  assert.notEqual(b.pack, a.pack, 'the next record opens a new pack')
  await writer.close()
})

test('a write that fails comes back with its system error code; the writer goes on', async () => {
  const root = tempDir('narswarm-writer-')
  const dir = join(root, 'no-such-dir')
  const writer = new PackWriter({ dir, fsync: false, registry: registry() })
  await assert.rejects(writer.write(Buffer.from('a')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT')
  mkdirSync(dir)
  assert.equal((await writer.write(Buffer.from('b'))).storedSize, 2)
  await writer.close()
})

test('close waits for pending writes; a write after close is refused', async () => {
  const dir = tempDir('narswarm-writer-')
  const packs = registry()
  const writer = new PackWriter({ dir, fsync: true, registry: packs })
  const chunks = Array.from({ length: 40 }, () => randomBytes(100_000))
  const writes = chunks.map(async c => await writer.write(c))
  await writer.close()
  const stored = await Promise.all(writes)
  const file = readFileSync(packPath(dir, 1))
  for (const [i, c] of chunks.entries()) assert.ok(contents(file.subarray(stored[i]!.offset, stored[i]!.offset + stored[i]!.storedSize)).equals(c))
  await assert.rejects(writer.write(chunks[0]!), /closed/)
})

type Patchable = 'fdatasync' | 'close' | 'open' | 'writev'

/**
 * Runs `body` with some node:fs functions replaced (each patch is given the real one) and a fresh
 * instance of the pack writer module, which takes fdatasync when it is loaded; puts them back.
 */
async function withFs (patches: { [K in Patchable]?: (real: typeof fs[K]) => typeof fs[K] }, body: (Writer: typeof PackWriter) => Promise<void>): Promise<void> {
  const real = new Map<Patchable, unknown>()
  for (const [name, patch] of Object.entries(patches) as Array<[Patchable, (real: unknown) => unknown]>) {
    real.set(name, fs[name])
    ;(fs as Record<Patchable, unknown>)[name] = patch(fs[name])
  }
  syncBuiltinESMExports()
  try {
    const fresh = `../../src/chunk/pack-writer.ts?patched=${++patchedImports}`
    await body((await import(fresh) as typeof import('../../src/chunk/pack-writer.ts')).PackWriter)
  } finally {
    for (const [name, fn] of real) (fs as Record<Patchable, unknown>)[name] = fn
    syncBuiltinESMExports()
  }
}
let patchedImports = 0

/** Each chunk's record holds it, where `write` said. */
function assertStored (dir: string, chunks: Buffer[], stored: Array<{ pack: number, offset: number, storedSize: number }>): void {
  for (const [i, c] of chunks.entries()) {
    const { pack, offset, storedSize } = stored[i]!
    assert.ok(contents(readFileSync(packPath(dir, pack)).subarray(offset, offset + storedSize)).equals(c), `chunk ${i}`)
  }
}

test('a pack sealed while a shared fdatasync of it is under way: the sync is never issued on a closed descriptor', async () => {
  // Each fdatasync starts a few milliseconds late, as on a busy thread pool, so that a pack that
  // fills up is sealed (and its descriptor closed) while the shared sync that covers its last
  // records has not started yet. A descriptor number that a new pack is given again is open again.
  const closed = new Set<number>()
  await withFs({
    fdatasync: realSync => ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      setTimeout(() => { closed.has(fd) ? cb(Object.assign(new Error(`fdatasync of closed descriptor ${fd}`), { code: 'EBADF' })) : realSync(fd, cb) }, 3)
    }) as typeof fs.fdatasync,
    close: realClose => ((fd: number, cb?: (err: NodeJS.ErrnoException | null) => void) => { closed.add(fd); realClose(fd, (err) => { cb?.(err) }) }) as typeof fs.close,
    open: realOpen => ((path: string, flags: string, cb: (err: NodeJS.ErrnoException | null, fd: number) => void) => {
      realOpen(path, flags, (err, fd) => { if (err === null) closed.delete(fd); cb(err, fd) })
    }) as typeof fs.open
  }, async SlowSyncWriter => {
    const dir = tempDir('narswarm-writer-')
    const packs = registry()
    const writer = new SlowSyncWriter({ dir, fsync: true, registry: packs, packBytes: 96 << 10 })
    const chunks = Array.from({ length: 120 }, () => randomBytes(40_000))
    // Waves of writes, so that packs fill and are sealed while the syncs of earlier waves wait.
    const stored = []
    for (let i = 0; i < chunks.length; i += 12) stored.push(...await Promise.all(chunks.slice(i, i + 12).map(async c => await writer.write(c))))
    await writer.close()
    assert.ok(packs.made.length > 10, `${packs.made.length} packs`)
    assertStored(dir, chunks, stored)
  })
})

test('`written` is called once the record landed, before its fdatasync; the write resolves only after it', async () => {
  // Every fdatasync waits until the test lets it go.
  const held: Array<() => void> = []
  const releaseAll = (): void => { for (const release of held.splice(0)) release() }
  await withFs({
    fdatasync: realSync => ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => { held.push(() => realSync(fd, cb)) }) as typeof fs.fdatasync
  }, async HeldSyncWriter => {
    const writer = new HeldSyncWriter({ dir: tempDir('narswarm-writer-'), fsync: true, registry: registry() })
    let written = false
    let resolved = false
    const write = writer.write(randomBytes(50_000), undefined, () => { written = true }).then(at => { resolved = true; return at })
    // Bounded, so that a writer that never syncs fails the test rather than hanging it.
    for (let i = 0; held.length === 0 && i < 5000; i++) await new Promise(resolve => setTimeout(resolve, 1))
    assert.ok(written, 'written once the record landed')
    assert.ok(!resolved, 'not durable before its fdatasync')
    for (let i = 0; !resolved && i < 1000; i++) {
      releaseAll()
      await new Promise(resolve => setTimeout(resolve, 1))
    }
    assert.ok(resolved)
    await write
    const closing = writer.close()
    while (!(await Promise.race([closing.then(() => true), new Promise(resolve => setTimeout(() => resolve(false), 1))]))) releaseAll()
  })
})

test('records written in one turn of the event loop go out together: fewer writes than records, each where it was said to be', async () => {
  let calls = 0
  await withFs({
    writev: realWritev => ((...args: Parameters<typeof fs.writev>) => { calls++; return (realWritev as (...a: unknown[]) => void)(...args) }) as typeof fs.writev
  }, async CountingWriter => {
    const dir = tempDir('narswarm-writer-')
    const writer = new CountingWriter({ dir, fsync: false, registry: registry() })
    const chunks = Array.from({ length: 32 }, () => randomBytes(10_000))
    const stored = await Promise.all(chunks.map(async c => await writer.write(c)))
    await writer.close()
    assert.ok(calls > 0 && calls <= chunks.length / 4, `${calls} writes for ${chunks.length} records`)
    assertStored(dir, chunks, stored)
  })
})
