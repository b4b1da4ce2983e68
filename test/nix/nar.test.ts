import { test } from 'node:test'
import assert from 'node:assert/strict'
import { NixHash } from '../../src/nix/hash.ts'
import { parseNar, validateNar } from '../../src/nix/nar/reader.ts'
import type { NarEvent } from '../../src/nix/nar/reader.ts'
import { narTreeEvents, writeNar } from '../../src/nix/nar/writer.ts'
import type { NarTree, NarWriteEvent } from '../../src/nix/nar/writer.ts'
import { listingJson, narListing } from '../../src/nix/nar/listing.ts'
import { collect } from '../helpers/bytes.ts'

const enc = new TextEncoder()

/** Handmade NAR bytes: strings become `str(s)`, Uint8Arrays too; numbers become a bare u64. */
function nar (...parts: Array<string | Uint8Array | number>): Buffer {
  const out: Buffer[] = []
  for (const p of parts) {
    const len = Buffer.alloc(8)
    if (typeof p === 'number') { len.writeBigUInt64LE(BigInt(p)); out.push(len); continue }
    const b = typeof p === 'string' ? enc.encode(p) : p
    len.writeBigUInt64LE(BigInt(b.length))
    out.push(len, Buffer.from(b), Buffer.alloc((8 - b.length % 8) % 8))
  }
  return Buffer.concat(out)
}

async function * chunked (b: Uint8Array, size = b.length || 1): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

/** Parses and buffers every file, so the events can be replayed into the writer. */
async function events (bytes: Uint8Array, size?: number): Promise<Array<NarEvent & { data?: Buffer }>> {
  const out: Array<NarEvent & { data?: Buffer }> = []
  for await (const ev of parseNar(chunked(bytes, size))) {
    if (ev.type === 'file') out.push({ ...ev, data: await collect(ev.contents) })
    else out.push(ev)
  }
  return out
}

function replay (evs: Array<NarEvent & { data?: Buffer }>): NarWriteEvent[] {
  return evs.map(ev => ev.type === 'file' ? { ...ev, contents: ev.data! } : ev)
}

const hello = enc.encode('hello\n')
const script = enc.encode('#!/bin/sh\necho hi\n')
const dirTree: NarTree = {
  type: 'directory',
  entries: {
    'run.sh': { type: 'file', executable: true, contents: script },
    link: { type: 'symlink', target: 'a.txt' },
    'a.txt': { type: 'file', contents: hello }
  }
}

// §4.1 of the protocol reference: NAR size and sha256 (nix32), as Nix 2.8 produced them.
const vectors: Array<{ name: string, tree: NarTree, size: number, nix32: string }> = [
  { name: 'hello.txt', tree: { type: 'file', contents: hello }, size: 120, nix32: '04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw' },
  { name: 'empty file', tree: { type: 'file', contents: new Uint8Array(0) }, size: 112, nix32: '0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p' },
  { name: 'executable', tree: { type: 'file', executable: true, contents: hello }, size: 152, nix32: '1yhh619m3cy1mird7f0l7zsmiv9rayqn075zinda2g7rscwn0hv5' },
  { name: 'symlink', tree: { type: 'symlink', target: 'a.txt' }, size: 120, nix32: '10afhdla3fy4d56mfb7b45i291h74jngwakp16wd3r36m37h0g4d' },
  { name: 'empty dir', tree: { type: 'directory', entries: {} }, size: 96, nix32: '0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5' },
  { name: 'directory', tree: dirTree, size: 720, nix32: '1w6df45nyvb9v1mhz027qdc34wapalr0lvbpbfpmsvrkg17vb7fn' }
]

test('the writer produces every reference NAR vector', async () => {
  for (const v of vectors) {
    const bytes = await collect(writeNar(v.tree))
    assert.equal(bytes.length, v.size, v.name)
    assert.equal(NixHash.of('sha256', bytes).toNix32(), v.nix32, v.name)
  }
  const h = await collect(writeNar(vectors[0]!.tree))
  assert.equal(NixHash.of('sha256', h).toBase16(), '1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13')
  const d = await collect(writeNar(dirTree))
  assert.equal(NixHash.of('sha256', d).toBase16(), 'd69db54f78336f5daf5b776d0a325557713258c347800f6bd8696d6f0b71cdf0')
  assert.equal(h.subarray(96, 102).toString(), 'hello\n')
})

test('the reader parses every vector, in any chunking, and the writer rebuilds it byte for byte', async () => {
  for (const v of vectors) {
    const bytes = await collect(writeNar(v.tree))
    for (const size of [1, 3, 8, 13, 4096]) {
      const evs = await events(bytes, size)
      assert.deepEqual(await collect(writeNar(replay(evs))), bytes, `${v.name} in ${size}-byte chunks`)
      assert.deepEqual(await collect(validateNar(chunked(bytes, size))), bytes)
    }
  }
})

test('the directory vector yields its entries in order, with content offsets 232 and 648', async () => {
  const bytes = await collect(writeNar(dirTree))
  const evs = await events(bytes, 5)
  assert.deepEqual(evs.map(e => [e.type, e.path, e.depth]), [
    ['directory', '', 0], ['file', 'a.txt', 1], ['symlink', 'link', 1], ['file', 'run.sh', 1]
  ])
  const [, a, link, run] = evs
  assert.ok(a?.type === 'file' && run?.type === 'file' && link?.type === 'symlink')
  assert.deepEqual([a.offset, a.size, a.executable, a.data?.toString()], [232, 6, false, 'hello\n'])
  assert.deepEqual([run.offset, run.size, run.executable], [648, 18, true])
  assert.equal(link.target, 'a.txt')
  assert.equal(bytes.subarray(648, 666).toString(), '#!/bin/sh\necho hi\n')
})

test('the listing matches the .ls file Nix 2.8 wrote for the directory vector', async () => {
  const bytes = await collect(writeNar(dirTree))
  assert.equal(listingJson(await narListing(chunked(bytes, 7))),
    '{"version":1,"root":{"type":"directory","entries":{"a.txt":{"type":"regular","size":6,"narOffset":232},' +
    '"link":{"type":"symlink","target":"a.txt"},"run.sh":{"type":"regular","size":18,"executable":true,"narOffset":648}}}}')
  // Integer-like names keep NAR (bytewise) order, which a plain object would not.
  const nums = await collect(writeNar({ type: 'directory', entries: { 10: { type: 'file', contents: '' }, 9: { type: 'file', contents: '' } } }))
  assert.match(listingJson(await narListing(chunked(nums))), /"entries":\{"10":.*"9":/)
})

test('unread contents are skipped, and contents cannot be read after moving on', async () => {
  const bytes = await collect(writeNar(dirTree))
  const it = parseNar(chunked(bytes, 3))[Symbol.asyncIterator]()
  await it.next()
  const a = (await it.next()).value as NarEvent
  assert.equal(a.type, 'file')
  const link = (await it.next()).value as NarEvent
  assert.equal(link.path, 'link')
  if (a.type === 'file') await assert.rejects(collect(a.contents), /read after the next NAR event/)
  const run = (await it.next()).value as NarEvent
  assert.ok(run.type === 'file')
  assert.equal((await collect(run.contents)).toString(), '#!/bin/sh\necho hi\n')
  await assert.rejects(collect(run.contents), /only once/)
  assert.equal((await it.next()).done, true)
})

test('the writer coalesces small tokens into large chunks', async () => {
  const entries: Record<string, NarTree> = {}
  for (let i = 0; i < 5000; i++) entries[`f${String(i).padStart(5, '0')}`] = { type: 'file', contents: `${i}\n` }
  const chunks: Uint8Array[] = []
  for await (const c of writeNar({ type: 'directory', entries })) chunks.push(c)
  const total = chunks.reduce((n, c) => n + c.length, 0)
  assert.ok(chunks.length < total / 32768, `${chunks.length} chunks for ${total} bytes`)
  assert.equal((await events(Buffer.concat(chunks), 65536)).length, 5001)
})

test('a NAR with a file over 4 GiB streams through writer and reader with bounded memory', async () => {
  const MiB = new Uint8Array(1 << 20).fill(0x61)
  const size = 4 * 1024 * 1024 * 1024 + 5
  async function * contents (): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 4096; i++) yield MiB
    yield enc.encode('tail!')
  }
  const before = process.memoryUsage().rss
  let seen = 0
  let last = ''
  for await (const ev of parseNar(writeNar([{ type: 'file', depth: 0, name: '', size, contents: contents() }]))) {
    assert.ok(ev.type === 'file')
    assert.equal(ev.size, size)
    for await (const c of ev.contents) { seen += c.length; last = Buffer.from(c.subarray(-5)).toString() }
  }
  assert.equal(seen, size)
  assert.equal(last, 'tail!')
  assert.ok(process.memoryUsage().rss - before < 200 * 1024 * 1024)
})

test('the writer refuses unsorted, duplicate and invalid entries, and inconsistent trees', async () => {
  const f = (name: string, depth = 1): NarWriteEvent => ({ type: 'file', depth, name, contents: hello })
  const root: NarWriteEvent = { type: 'directory', depth: 0, name: '' }
  const cases: Array<[string, NarWriteEvent[], RegExp]> = [
    ['unsorted', [root, f('b'), f('a')], /not sorted/],
    // 'Z' (0x5a) sorts before 'a'; 'é' (0xc3 0xa9) after 'z' as bytes.
    ['case', [root, f('a'), f('Z')], /not sorted/],
    ['duplicate', [root, f('a'), f('a')], /not sorted/],
    ['dot-dot', [root, f('..')], /"\." or "\.\."/],
    ['slash', [root, f('a/b')], /contains "\/"/],
    ['nul', [root, f('a\0b')], /NUL/],
    ['empty name', [root, f('')], /empty entry name/],
    ['long name', [root, f('x'.repeat(256))], /longer than 255/],
    ['named root', [f('x', 0)], /root node must have an empty name/],
    ['two roots', [f('', 0), f('', 0)], /after the root/],
    ['orphan', [root, f('x', 2)], /no open parent/],
    ['size', [{ type: 'file', depth: 0, name: '', size: 3, contents: [hello] }], /has 6 bytes, not its 3|more than its 3/],
    ['no size', [{ type: 'file', depth: 0, name: '', contents: [hello] }], /gives no size/],
    ['empty target', [{ type: 'symlink', depth: 0, name: '', target: '' }], /target of 1 to 4095/],
    ['nothing', [], /no root node/]
  ]
  for (const [label, evs, re] of cases) {
    await assert.rejects(collect(writeNar(evs)), (err: Error) => err.name === 'FormatError' && re.test(err.message), label)
  }
  // Bytewise order is accepted even where JS string order disagrees: U+1F600 (f0 9f…) after U+FF5A (ef bd…).
  const ok = await collect(writeNar([root, f('Z'), f('a'), f('ｚ'), f('😀')]))
  assert.equal((await events(ok)).length, 5)
  assert.ok('😀' < 'ｚ', 'JS strings order these the other way')
  // A tree's keys are sorted by bytes, not by JS order.
  const tree = await collect(writeNar({ type: 'directory', entries: { '😀': { type: 'file', contents: '' }, 'ｚ': { type: 'file', contents: '' } } }))
  assert.deepEqual((await events(tree)).map(e => e.path), ['', 'ｚ', '😀'])
})

// Offsets in the handmade directory NAR: the first entry's name string is at 128, the second's at 312.
const entry = (name: string | Uint8Array, ...node: Array<string | Uint8Array | number>): Array<string | Uint8Array | number> =>
  ['entry', '(', 'name', name, 'node', '(', 'type', ...node, ')', ')']
const file = ['regular', 'contents', '']
const dirNar = (...entries: Array<Array<string | Uint8Array | number>>): Buffer =>
  nar('nix-archive-1', '(', 'type', 'directory', ...entries.flat(), ')')
const helloNar = nar('nix-archive-1', '(', 'type', 'regular', 'contents', 'hello\n', ')')
const withByte = (b: Buffer, at: number, v: number): Buffer => { const c = Buffer.from(b); c[at] = v; return c }

const malformed: Array<[string, Uint8Array, RegExp, number]> = [
  ['bad magic', nar('nix-archive-2', '(', 'type', 'regular', 'contents', '', ')'), /bad magic/, 0],
  ['not a NAR at all', Buffer.from('\x1f\x8b\x08\x00 gzip data, not a NAR'), /bad magic/, 0],
  ['truncated at 0', helloNar.subarray(0, 0), /NAR truncated at offset 0/, 0],
  ['truncated in the magic length', helloNar.subarray(0, 5), /NAR truncated at offset 5/, 5],
  ['truncated in a tag', helloNar.subarray(0, 30), /NAR truncated at offset 30/, 30],
  ['truncated in the contents', helloNar.subarray(0, 100), /NAR truncated at offset 100/, 100],
  ['truncated in the padding', helloNar.subarray(0, 103), /NAR truncated at offset 103/, 103],
  ['truncated before the close', helloNar.subarray(0, 104), /NAR truncated at offset 104/, 104],
  ['truncated in the close', helloNar.subarray(0, 112), /NAR truncated at offset 112/, 112],
  ['non-zero padding after contents', withByte(helloNar, 102, 1), /non-zero padding/, 102],
  ['non-zero padding in the magic', withByte(helloNar, 23, 0x20), /non-zero padding/, 23],
  ['unsorted entries', dirNar(entry('b', ...file), entry('a', ...file)), /not sorted/, 312],
  ['uppercase after lowercase', dirNar(entry('a', ...file), entry('B', ...file)), /not sorted/, 312],
  ['duplicate entries', dirNar(entry('a', ...file), entry('a', ...file)), /duplicate entry/, 312],
  ['dot-dot name', dirNar(entry('..', ...file)), /"\." or "\.\."/, 128],
  ['dot name', dirNar(entry('.', ...file)), /"\." or "\.\."/, 128],
  ['slash in name', dirNar(entry('a/b', ...file)), /contains "\/"/, 128],
  ['NUL in name', dirNar(entry('a\0', ...file)), /NUL/, 128],
  ['empty name', dirNar(entry('', ...file)), /empty entry name/, 128],
  ['name over 255 bytes', dirNar(entry('n'.repeat(256), ...file)), /entry name length 256 exceeds 255/, 128],
  ['wrong tag', nar('nix-archive-1', '(', 'typ', 'regular', 'contents', '', ')'), /expected 'type', got "typ"/, 40],
  ['unknown type', nar('nix-archive-1', '(', 'type', 'fifo', ')'), /expected 'regular' or 'symlink' or 'directory'/, 56],
  ['contents before type', nar('nix-archive-1', '(', 'contents', '', ')'), /expected 'type'/, 40],
  ['executable on a symlink', nar('nix-archive-1', '(', 'type', 'symlink', 'executable', '', 'target', 'a', ')'), /expected 'target', got "executable"/, 72],
  ['executable on a directory', nar('nix-archive-1', '(', 'type', 'directory', 'executable', '', ')'), /expected 'entry' or '\)', got "executable"/, 80],
  ['executable marker with a value', nar('nix-archive-1', '(', 'type', 'regular', 'executable', 'x', 'contents', '', ')'), /executable marker/, 96],
  ['executable twice', nar('nix-archive-1', '(', 'type', 'regular', 'executable', '', 'executable', '', 'contents', '', ')'), /expected 'contents'/, 104],
  ['empty symlink target', nar('nix-archive-1', '(', 'type', 'symlink', 'target', '', ')'), /empty symlink target/, 88],
  ['NUL in symlink target', nar('nix-archive-1', '(', 'type', 'symlink', 'target', 'a\0b', ')'), /contains NUL/, 88],
  ['symlink target over 4095 bytes', nar('nix-archive-1', '(', 'type', 'symlink', 'target', 't'.repeat(4096), ')'), /exceeds 4095/, 88],
  ['huge contents length', nar('nix-archive-1', '(', 'type', 'regular', 'contents', 2 ** 60), /≥ 2\^53/, 88],
  ['huge tag length', nar('nix-archive-1', 2 ** 40), /expected '\('.*1099511627776 bytes/, 24],
  ['trailing garbage', Buffer.concat([helloNar, Buffer.alloc(8)]), /trailing bytes after the NAR/, 120],
  ['second root', Buffer.concat([helloNar, helloNar.subarray(24)]), /trailing bytes/, 120],
  ['missing close', nar('nix-archive-1', '(', 'type', 'regular', 'contents', 'x', 'entry'), /expected '\)', got "entry"/, 104]
]

test('malformed NARs are refused with a FormatError naming the offset', async () => {
  for (const [label, bytes, re, offset] of malformed) {
    for (const size of [1, 8, 1 << 16]) {
      await assert.rejects(events(bytes, size), (err: any) => {
        assert.equal(err.name, 'FormatError', `${label}: ${err.stack}`)
        assert.match(err.message, re, label)
        assert.equal(err.position, offset, `${label}: ${err.message}`)
        assert.match(err.message, new RegExp(`offset ${offset}\\b`), label)
        return true
      }, label)
    }
    await assert.rejects(collect(validateNar(chunked(bytes, 16))), { name: 'FormatError' }, label)
  }
})

test('nesting is limited to 64 levels by default and the limits can be raised', async () => {
  const deep = (levels: number): Buffer => {
    const parts: Array<string | number> = ['nix-archive-1']
    for (let i = 0; i < levels; i++) parts.push('(', 'type', 'directory', 'entry', '(', 'name', 'd', 'node')
    parts.push('(', 'type', 'regular', 'contents', '', ')')
    for (let i = 0; i < levels; i++) parts.push(')', ')')
    return nar(...parts)
  }
  assert.equal((await events(deep(63))).length, 64)
  await assert.rejects(events(deep(64)), /nested deeper than 64 levels/)
  let n = 0
  for await (const _ of parseNar(chunked(deep(100)), { maxDepth: 200 })) n++
  assert.equal(n, 101)
  const long = dirNar(entry('n'.repeat(300), ...file))
  const names: string[] = []
  for await (const ev of parseNar(chunked(long), { maxNameLength: 1000 })) if (ev.path !== '') names.push(ev.path)
  assert.deepEqual(names, ['n'.repeat(300)])
})

test('validateNar passes bytes through and stops at the first violation', async () => {
  const good = await collect(writeNar(dirTree))
  assert.deepEqual(await collect(validateNar(chunked(good, 100))), good)
  const bad = withByte(good, 700, 0x41) // in the padding of the ')' that closes run.sh's entry
  const got: Uint8Array[] = []
  await assert.rejects((async () => { for await (const c of validateNar(chunked(bad, 100))) got.push(c) })(), { name: 'FormatError' })
  assert.ok(Buffer.concat(got).length <= 700, 'nothing after the violation is passed on')
  assert.deepEqual(Buffer.concat(got), good.subarray(0, Buffer.concat(got).length))
})

test('parseNar honours an abort signal and releases its source', async () => {
  let returned = false
  async function * endless (): AsyncGenerator<Uint8Array> {
    try {
      yield nar('nix-archive-1', '(', 'type', 'regular', 'contents', 1 << 30)
      for (;;) yield new Uint8Array(65536)
    } finally { returned = true }
  }
  const ac = new AbortController()
  let n = 0
  await assert.rejects((async () => {
    for await (const ev of parseNar(endless(), { signal: ac.signal })) {
      if (ev.type === 'file') for await (const _ of ev.contents) if (++n === 10) ac.abort()
    }
  })(), { name: 'AbortError' })
  assert.ok(returned)
  assert.equal(n, 10)
})

test('narTreeEvents accepts Map entries with byte names', async () => {
  const entries = new Map<string | Uint8Array, NarTree>([[new Uint8Array([0xff]), { type: 'file', contents: '' }], ['a', { type: 'file', contents: '' }]])
  const evs = [...narTreeEvents({ type: 'directory', entries })]
  assert.deepEqual(evs.map(e => e.depth), [0, 1, 1])
  const bytes = await collect(writeNar(evs))
  const parsed = await events(bytes)
  assert.deepEqual(Buffer.from(parsed[2]!.name), Buffer.from([0xff]))
})
