import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { dumpPath } from '../../src/nix/nar/dump.ts'
import { parseNar } from '../../src/nix/nar/reader.ts'
import type { NarEvent } from '../../src/nix/nar/reader.ts'
import { writeNar } from '../../src/nix/nar/writer.ts'
import type { NarWriteEvent } from '../../src/nix/nar/writer.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { nixSkip } from '../helpers/nix.ts'
import { collect } from '../helpers/bytes.ts'

let dir: string
before(async () => { dir = await mkdtemp(join(tmpdir(), 'narswarm-dump-')) })
after(async () => { await rm(dir, { recursive: true, force: true }) })

/** `nix-store --dump path`, streamed: its sha256, length and the bytes if small. */
async function nixDump (path: string): Promise<{ sha256: string, length: number }> {
  const child = spawn('nix-store', ['--dump', path], { stdio: ['ignore', 'pipe', 'inherit'] })
  const h = createHash('sha256')
  let length = 0
  for await (const c of child.stdout) { h.update(c); length += c.length }
  const code = await new Promise(resolve => child.once('close', resolve))
  assert.equal(code, 0)
  return { sha256: h.digest('hex'), length }
}

/** Our dump's sha256 and length; also parses it and rewrites it, which must give the same bytes. */
async function ourDump (path: string | Buffer): Promise<{ sha256: string, length: number }> {
  const nar = createHash('sha256')
  const again = createHash('sha256')
  let length = 0
  let againLength = 0
  const source = async function * (): AsyncGenerator<Uint8Array> {
    for await (const c of dumpPath(path)) { nar.update(c); length += c.length; yield c }
  }
  async function * replay (): AsyncGenerator<NarWriteEvent> {
    for await (const ev of parseNar(source())) {
      // Contents flow straight from the reader into the writer, without buffering.
      yield ev.type === 'file' ? { ...ev, contents: ev.contents } : ev
    }
  }
  for await (const c of writeNar(replay())) { again.update(c); againLength += c.length }
  const sha256 = nar.digest('hex')
  assert.equal(again.digest('hex'), sha256, 'reader → writer round trip')
  assert.equal(againLength, length)
  return { sha256, length }
}

// §4.1 vectors, made on disk.
test('dumpPath reproduces the reference NAR vectors', async () => {
  const v = join(dir, 'vectors')
  await mkdir(join(v, 'dir'), { recursive: true })
  await writeFile(join(v, 'hello.txt'), 'hello\n')
  await writeFile(join(v, 'empty'), '')
  await writeFile(join(v, 'exec'), 'hello\n', { mode: 0o755 })
  await symlink('a.txt', join(v, 'link'))
  await mkdir(join(v, 'emptydir'))
  await writeFile(join(v, 'dir', 'a.txt'), 'hello\n')
  await symlink('a.txt', join(v, 'dir', 'link'))
  await writeFile(join(v, 'dir', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
  const expected: Array<[string, number, string]> = [
    ['hello.txt', 120, '04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw'],
    ['empty', 112, '0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p'],
    ['exec', 152, '1yhh619m3cy1mird7f0l7zsmiv9rayqn075zinda2g7rscwn0hv5'],
    ['link', 120, '10afhdla3fy4d56mfb7b45i291h74jngwakp16wd3r36m37h0g4d'],
    ['emptydir', 96, '0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5'],
    ['dir', 720, '1w6df45nyvb9v1mhz027qdc34wapalr0lvbpbfpmsvrkg17vb7fn']
  ]
  for (const [name, size, nix32] of expected) {
    const nar = await collect(dumpPath(join(v, name)))
    assert.equal(nar.length, size, name)
    assert.equal(NixHash.of('sha256', nar).toNix32(), nix32, name)
  }
  const offsets: number[] = []
  for await (const ev of parseNar(dumpPath(join(v, 'dir')))) if (ev.type === 'file') offsets.push(ev.offset)
  assert.deepEqual(offsets, [232, 648])
})

test('dumpPath streams a large file in bounded chunks', async () => {
  const big = join(dir, 'big.bin')
  const block = Buffer.alloc(1 << 20)
  for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24
  await writeFile(big, Buffer.concat(Array.from({ length: 20 }, (_, i) => { const b = Buffer.from(block); b[0] = i; return b })))
  let largest = 0
  let length = 0
  for await (const c of dumpPath(big)) { largest = Math.max(largest, c.length); length += c.length }
  assert.equal(length, 20 * (1 << 20) + 112)
  assert.ok(largest <= 1 << 20, `largest chunk ${largest}`)
})

test('dumpPath refuses sockets and FIFOs with a clear error', async () => {
  const special = join(dir, 'special')
  await mkdir(special)
  const fifo = join(special, 'fifo')
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0)
  await assert.rejects(collect(dumpPath(special)), /cannot dump '.*fifo': it is a FIFO, and a NAR holds only regular files, directories and symlinks/)
  await rm(fifo)
  const server = createServer()
  await new Promise<void>(resolve => server.listen(join(special, 'sock'), resolve))
  try {
    await assert.rejects(collect(dumpPath(special)), /it is a socket/)
  } finally {
    server.close()
  }
})

test('dumpPath stops when aborted', async () => {
  const ac = new AbortController()
  let n = 0
  await assert.rejects((async () => {
    for await (const _ of dumpPath('/usr/share', { signal: ac.signal })) if (++n === 3) ac.abort()
  })(), { name: 'AbortError' })
})

test('our dump is byte-identical to nix-store --dump on tricky trees', { skip: nixSkip() }, async () => {
  const t = join(dir, 'tricky')
  await mkdir(join(t, 'nested', 'deeper', 'deepest'), { recursive: true })
  await mkdir(join(t, 'empty-dir'))
  await writeFile(join(t, 'nested', 'deeper', 'deepest', 'leaf'), 'leaf\n')
  await writeFile(join(t, 'empty-file'), '')
  await writeFile(join(t, 'exec-owner'), 'x', { mode: 0o744 })
  await writeFile(join(t, 'exec-group-only'), 'x', { mode: 0o654 })
  await writeFile(join(t, 'exec-all'), '#!/bin/sh\n', { mode: 0o755 })
  await writeFile(join(t, 'read-only'), 'ro', { mode: 0o444 })
  await symlink('nested/deeper', join(t, 'rel-link'))
  await symlink('/nonexistent/absolute/target', join(t, 'dangling-abs'))
  await symlink('missing', join(t, 'dangling-rel'))
  await symlink('/usr/share', join(t, 'abs-link'))
  await symlink('x'.repeat(1000), join(t, 'long-target'))
  // Names whose bytewise order differs from JS string order, and one that is not UTF-8.
  for (const name of ['B', 'a', 'Z', '_', 'é', 'ｚ', '😀', 'ß', 'a.b', 'a-b', 'a0', '~', '10', '9']) {
    await writeFile(join(t, name), name)
  }
  await writeFile(Buffer.concat([Buffer.from(t), Buffer.from('/'), Buffer.from([0xff, 0xfe, 0x41])]), 'latin-1 name')
  await writeFile(join(t, 'x'.repeat(255)), 'longest name')
  await chmod(join(t, 'exec-owner'), 0o744)
  const ours = await ourDump(t)
  assert.deepEqual(ours, await nixDump(t))
  for (const sub of ['empty-dir', 'empty-file', 'exec-owner', 'exec-group-only', 'dangling-abs', 'nested']) {
    assert.deepEqual(await ourDump(join(t, sub)), await nixDump(join(t, sub)), sub)
  }
})

test('our dump is byte-identical to nix-store --dump on a 20 MB file and on real directories', { skip: nixSkip() }, async () => {
  assert.deepEqual(await ourDump(join(dir, 'big.bin')), await nixDump(join(dir, 'big.bin')))
  const reals = ['/usr/share/perl', '/usr/share/doc', '/usr/lib/python3.11/email', '/usr/share/zoneinfo'].filter(d => existsSync(d))
  assert.ok(reals.length > 0, 'at least one real directory to compare')
  for (const real of reals) assert.deepEqual(await ourDump(real), await nixDump(real), real)
})

test('every event of a real NAR is well-formed', async () => {
  const kinds = new Map<NarEvent['type'], number>()
  for await (const ev of parseNar(dumpPath(existsSync('/usr/share/doc') ? '/usr/share/doc' : '/usr/share'))) {
    kinds.set(ev.type, (kinds.get(ev.type) ?? 0) + 1)
    assert.ok(ev.depth === 0 ? ev.path === '' : ev.path.split('/').length === ev.depth)
  }
  assert.ok((kinds.get('file') ?? 0) > 10)
  assert.ok((kinds.get('directory') ?? 0) > 10)
})
