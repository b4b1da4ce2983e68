import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { crc32 } from 'node:zlib'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { COMPRESSIONS, compress, decodeProblem, decompress, findBinary } from '../../src/nix/compression.ts'
import { DECODE_ONLY, pickProgram } from '../../src/nix/archive-codecs.ts'
import type { Compression } from '../../src/nix/compression.ts'
import { dumpPath } from '../../src/nix/nar/dump.ts'
import { validateNar } from '../../src/nix/nar/reader.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { plainNarOf } from '../helpers/closure.ts'
import { collect, sha256Hex } from '../helpers/bytes.ts'

type Engine = 'library' | 'process'
/** The engines this machine has for a codec: the in-process one always, the binary when on PATH. */
function engines (c: Compression): Engine[] {
  if (c === 'none' || c === 'br') return ['library']
  return findBinary(c) !== false ? ['library', 'process'] : ['library']
}
const cases = COMPRESSIONS.flatMap(c => engines(c).map(e => [c, e] as const))

async function * chunked (b: Uint8Array, size = 65536): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}
const sha256 = sha256Hex

/** Text-like bytes: compressible, but not trivially. */
function sample (size: number, seed = 1): Buffer {
  const words = ['nix', 'store', 'archive', 'lib', 'share', '/', '\n', 'hash', 'sha256', 'swarm', '0', '1', 'zstd']
  const parts: string[] = []
  let x = seed
  let n = 0
  while (n < size) {
    x = (x * 1103515245 + 12345) >>> 0
    const w = words[x % words.length]! + (x >>> 24).toString(16)
    parts.push(w)
    n += w.length
  }
  return Buffer.from(parts.join('')).subarray(0, size)
}

let dir: string
before(async () => { dir = await mkdtemp(join(tmpdir(), 'narswarm-codec-')) })
after(async () => { await rm(dir, { recursive: true, force: true }) })

test('unknown compression names are a FormatError listing the supported ones', async () => {
  for (const name of ['', 'XZ', 'lzop', 'zip']) {
    assert.throws(() => decompress(name, chunked(Buffer.alloc(1))), { name: 'FormatError', message: /supported: none, xz, zstd, bzip2, br, gzip, compress, lzma, lzip, lz4/ })
    assert.throws(() => compress(name, chunked(Buffer.alloc(1))), { name: 'FormatError' })
  }
  // Those that Nix writes through libarchive are read, never written.
  for (const name of DECODE_ONLY) assert.throws(() => compress(name, chunked(Buffer.alloc(1))), { name: 'FormatError', message: /supported: none, xz, zstd, bzip2, br\)/ })
})

test('every codec and engine round-trips empty, 1-byte and multi-MiB inputs', async () => {
  const inputs = [Buffer.alloc(0), Buffer.from('x'), sample(3 * 1024 * 1024 + 17)]
  for (const [c, engine] of cases) {
    for (const input of inputs) {
      const packed = await collect(compress(c, chunked(input), { engine }))
      for (const other of engines(c)) {
        // Each engine reads the other's output: the library and the binary speak the same format.
        const back = await collect(decompress(c, chunked(packed, 4093), { engine: other }))
        assert.equal(back.length, input.length, `${c} ${engine} → ${other}, ${input.length} bytes`)
        assert.equal(sha256(back), sha256(input), `${c} ${engine} → ${other}`)
      }
    }
  }
})

test('levels are checked and honoured', async () => {
  const input = sample(200_000)
  const small = await collect(compress('zstd', chunked(input), { level: 19 }))
  const fast = await collect(compress('zstd', chunked(input), { level: 1 }))
  assert.ok(small.length < fast.length)
  assert.throws(() => compress('br', chunked(input), { level: 12 }), RangeError)
  assert.throws(() => compress('xz', chunked(input), { level: 0 }), RangeError)
})

const PROGRAMS = (['xz', 'zstd', 'bzip2'] as const).filter(c => findBinary(c) !== false)
const missingPrograms = (['xz', 'zstd', 'bzip2'] as const).filter(c => !PROGRAMS.includes(c))

test('output of the real xz, zstd and bzip2 programs decodes to the right NAR', {
  skip: missingPrograms.length === 0 ? false : `not on PATH: ${missingPrograms.join(', ')} (the process engine of those codecs is not tested either; .ci/run installs them)`
}, async () => {
  const nar = await collect(dumpPath(existsSync('/usr/share/perl5') ? '/usr/share/perl5' : '/usr/share/zoneinfo'))
  const narHash = NixHash.of('sha256', nar)
  for (const c of PROGRAMS) {
    const packed = spawnSync(c, ['-c'], { input: nar, maxBuffer: 1 << 30 }).stdout
    for (const engine of engines(c)) {
      const out = await collect(validateNar(decompress(c, chunked(packed, 10_000), { engine })))
      assert.ok(NixHash.of('sha256', out).equals(narHash), `${c} via ${engine}`)
    }
  }
})

test('xz and bzip2 read concatenated streams, and xz the zero padding after each, as their programs do', async () => {
  const parts = [sample(100_000, 3), sample(5000, 4), sample(70_000, 5)]
  const whole = Buffer.concat(parts)
  for (const c of ['xz', 'bzip2'] as const) {
    const streams = await Promise.all(parts.map(async p => await collect(compress(c, chunked(p), { engine: 'library' }))))
    // xz stream padding is a multiple of 4 zero bytes (xz file format §2.2).
    const padding = c === 'xz' ? Buffer.alloc(8) : Buffer.alloc(0)
    const file = Buffer.concat(streams.flatMap(s => [s, padding]))
    for (const engine of engines(c)) {
      for (const size of [1000, 65536]) {
        const out = await collect(decompress(c, chunked(file, size), { engine }))
        assert.equal(sha256(out), sha256(whole), `${c} via ${engine}, ${size}-byte chunks`)
      }
    }
  }
})

test('corrupt, truncated and foreign input is a FormatError for every codec and engine', async () => {
  const input = sample(1 << 20, 7)
  for (const [c, engine] of cases) {
    if (c === 'none') continue
    const packed = await collect(compress(c, chunked(input), { engine }))
    const flipped = Buffer.from(packed)
    for (let i = Math.floor(packed.length / 2); i < Math.floor(packed.length / 2) + 16; i++) flipped[i]! ^= 0x55
    const bad: Array<[string, Uint8Array]> = [
      ['truncated', packed.subarray(0, Math.floor(packed.length / 2))],
      ['cut short by one byte', packed.subarray(0, packed.length - 1)],
      ['not compressed at all', Buffer.from('this is plainly not a compressed stream, just some text')],
      ['empty', Buffer.alloc(0)],
      ['bad header', Buffer.concat([Buffer.from([0x42, 0x42, 0x42, 0x42]), packed.subarray(4)])]
    ]
    // Brotli has no checksum: a flipped byte can decode to other bytes, which NarHash then catches.
    if (c !== 'br') bad.push(['corrupted in the middle', flipped])
    for (const [label, bytes] of bad) {
      for (const other of engines(c)) {
        await assert.rejects(collect(decompress(c, chunked(bytes, 8192), { engine: other })),
          (err: Error) => err.name === 'FormatError' && err.message.startsWith(`${c}: corrupt or truncated input`),
          `${c} (${engine} → ${other}): ${label}`)
      }
    }
  }
})

test('failures of the source pass through unchanged', async () => {
  for (const [c, engine] of cases) {
    const failing = async function * (): AsyncGenerator<Uint8Array> {
      yield sample(100_000)
      throw new Error('the network went away')
    }
    await assert.rejects(collect(compress(c, failing(), { engine })), /the network went away/, `${c} ${engine}`)
  }
})

/** Child processes of this test process (the codec binaries), by command name. */
function children (): string[] {
  const r = spawnSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)], { encoding: 'utf8' })
  return (r.stdout ?? '').split('\n').map(s => s.trim()).filter(s => s !== '' && s !== 'ps')
}

test('an abort mid-stream rejects and leaves no process behind, even when the source hangs', async () => {
  for (const [c, engine] of cases) {
    // Compressing an endless source: the codec always has work when the abort comes.
    const ac = new AbortController()
    async function * endless (): AsyncGenerator<Uint8Array> { for (let i = 0; ; i++) yield sample(65536, i) }
    let n = 0
    await assert.rejects((async () => {
      for await (const _ of compress(c, endless(), { engine, signal: ac.signal, level: c === 'xz' || c === 'bzip2' ? 1 : undefined })) if (++n === 2) ac.abort()
    })(), { name: 'AbortError' }, `${c} ${engine} compress`)

    // Decompressing from a source that stalls forever after its first bytes.
    const packed = await collect(compress(c, chunked(sample(300_000)), { engine, level: c === 'xz' || c === 'bzip2' ? 1 : undefined }))
    const stalled = new AbortController()
    async function * stuck (): AsyncGenerator<Uint8Array> { yield packed.subarray(0, packed.length >> 1); await new Promise(() => {}) }
    const pending = collect(decompress(c, stuck(), { engine, signal: stalled.signal }))
    setTimeout(() => stalled.abort(), 50)
    await assert.rejects(pending, { name: 'AbortError' }, `${c} ${engine} decompress`)
  }
  assert.deepEqual(children(), [])
  // An already-aborted signal refuses at once.
  await assert.rejects(collect(decompress('xz', chunked(Buffer.alloc(10)), { signal: AbortSignal.abort() })), { name: 'AbortError' })
})

test('a consumer that stops early frees the codec and its process', async () => {
  for (const [c, engine] of cases) {
    let released = false
    async function * source (): AsyncGenerator<Uint8Array> {
      try { for (let i = 0; ; i++) yield sample(65536, i) } finally { released = true }
    }
    for await (const _ of compress(c, source(), { engine, level: c === 'xz' || c === 'bzip2' ? 1 : undefined })) break
    await new Promise(resolve => setTimeout(resolve, 20))
    assert.ok(released, `${c} ${engine}: source released`)
  }
  assert.deepEqual(children(), [])
})

test('256 MiB stream through compress and decompress with bounded memory', async () => {
  const MiB = 1 << 20
  const block = sample(MiB, 3)
  for (const engine of engines('zstd')) {
    const expected = createHash('sha256')
    async function * big (): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 256; i++) {
        const b = Buffer.from(block)
        b.writeUInt32LE(i, 0)
        expected.update(b)
        yield b
      }
    }
    const before = process.memoryUsage().rss
    let peak = before
    const got = createHash('sha256')
    let length = 0
    for await (const c of decompress('zstd', compress('zstd', big(), { engine }), { engine })) {
      got.update(c)
      length += c.length
      peak = Math.max(peak, process.memoryUsage().rss)
    }
    assert.equal(length, 256 * MiB)
    assert.equal(got.digest('hex'), expected.digest('hex'))
    assert.ok(peak - before < 192 * MiB, `${engine}: RSS grew by ${((peak - before) / MiB).toFixed(0)} MiB`)
  }
})

/** `path` copied by Nix into a cache of its own in `compression`: the narinfo's fields and the NAR file. */
async function nixCopied (nix: NixEnv, path: string, compression: string): Promise<{ fields: Map<string, string>, packed: Buffer }> {
  const cache = join(nix.dir, `cache-${compression}`)
  await nix.run('nix', ['copy', '--to', `file://${cache}?compression=${compression}`, path])
  const narinfo = (await readdir(cache)).find(f => f.endsWith('.narinfo'))!
  const fields = new Map((await readFile(join(cache, narinfo), 'utf8')).trim().split('\n').map(l => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]))
  assert.equal(fields.get('Compression'), compression)
  return { fields, packed: await readFile(join(cache, fields.get('URL')!)) }
}

test('NARs that Nix writes through libarchive (gzip, compress, lzma, lzip, lz4) decode to their NarHash; cut or corrupt, a FormatError', { skip: nixSkip() }, async t => {
  const nix = await makeNixEnv()
  try {
    const src = join(dir, 'nixsrc-archive')
    await mkdir(src, { recursive: true })
    await writeFile(join(src, 'data.txt'), sample(1024 * 1024, 12))
    const path = (await nix.run('nix-store', ['--add', src])).trim()
    for (const c of DECODE_ONLY) {
      await t.test(c, { skip: decodeProblem(c) }, async () => {
        const { fields, packed } = await nixCopied(nix, path, c)
        const nar = await collect(validateNar(decompress(c, chunked(packed))))
        assert.equal(nar.length, Number(fields.get('NarSize')))
        assert.ok(NixHash.of('sha256', nar).equals(NixHash.parse(fields.get('NarHash')!)))
        const flipped = Buffer.from(packed)
        for (let i = 64; i < 96; i++) flipped[i]! ^= 0x55
        for (const [label, bad] of [['truncated', packed.subarray(0, packed.length >> 1)], ['not compressed', Buffer.from('plainly not compressed')], ['corrupted', flipped]] as const) {
          // A format without a checksum over the data may decode a flipped byte to other bytes: the
          // NarHash catches those; what must not happen is success with the wrong length unnoticed.
          const result = await collect(decompress(c, chunked(bad))).then(out => out, (err: Error) => err)
          if (result instanceof Error) assert.match(`${result.name}: ${result.message}`, new RegExp(`^FormatError: ${c}: corrupt or truncated input`), label)
          else assert.ok(!NixHash.of('sha256', result).equals(NixHash.parse(fields.get('NarHash')!)), `${c} ${label} decoded to the NAR`)
        }
      })
    }
  } finally {
    await nix.cleanup()
  }
})

test('NARs written by nix copy in every compression decode to their NarHash', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const src = join(dir, 'nixsrc')
    await mkdir(join(src, 'sub'), { recursive: true })
    await writeFile(join(src, 'sub', 'data.txt'), sample(2 * 1024 * 1024, 11))
    await writeFile(join(src, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
    const path = (await nix.run('nix-store', ['--add', src])).trim()
    for (const c of ['xz', 'zstd', 'bzip2', 'br'] as const) {
      const { fields, packed } = await nixCopied(nix, path, c)
      for (const engine of engines(c)) {
        const nar = await collect(validateNar(decompress(c, chunked(packed), { engine })))
        assert.equal(nar.length, Number(fields.get('NarSize')), `${c} ${engine}`)
        assert.ok(NixHash.of('sha256', nar).equals(NixHash.parse(fields.get('NarHash')!)), `${c} ${engine}`)
      }
    }
  } finally {
    await nix.cleanup()
  }
})

test('Nix reads NARs compressed by every codec and engine here', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const src = join(dir, 'nixsrc2')
    await mkdir(join(src, 'sub'), { recursive: true })
    const data = sample(1536 * 1024, 5)
    await writeFile(join(src, 'sub', 'data'), data)
    const path = (await nix.run('nix-store', ['--add', src])).trim()
    const { name: narinfoName, narinfo, nar } = await plainNarOf(nix, path, join(nix.dir, 'plain'))
    for (const [c, engine] of cases) {
      // A cache per case: Nix keeps narinfos in its disk cache by store URL.
      const cache = join(nix.dir, `ours-${c}-${engine}`)
      await mkdir(join(cache, 'nar'), { recursive: true })
      await writeFile(join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\n')
      // Level 1 makes the in-process bzip2 write many concatenated streams, which Nix must read too.
      await writeFile(join(cache, 'nar', `x.nar.${c}`), await collect(compress(c, chunked(nar), { engine, level: c === 'bzip2' ? 1 : undefined })))
      await writeFile(join(cache, narinfoName), narinfo
        .replace(/^URL: .*$/m, `URL: nar/x.nar.${c}`).replace(/^Compression: .*$/m, `Compression: ${c}`)
        .replace(/^File(Hash|Size): .*\n/gm, ''))
      const out = await nix.run('nix', ['store', 'cat', '--store', `file://${cache}`, `${path}/sub/data`])
      assert.equal(sha256(Buffer.from(out, 'latin1')), sha256(data), `${c} ${engine}`)
    }
  } finally {
    await nix.cleanup()
  }
})

test('an xz stream whose header asks for a 1 GiB dictionary is refused by every engine, before it allocates it', async () => {
  const packed = Buffer.from(await collect(compress('xz', chunked(sample(100_000, 3)), { engine: 'library' })))
  // The first block header follows the 12-byte stream header: its LZMA2 filter (id 0x21, one
  // property byte) names the dictionary size. 36 is 1 GiB; the header's CRC32 is made anew.
  const start = 12
  const size = (packed[start]! + 1) * 4
  const header = packed.subarray(start, start + size)
  const filter = header.indexOf(Buffer.from([0x21, 0x01]), 2)
  assert.ok(filter > 0, 'an LZMA2 filter in the block header')
  header[filter + 2] = 36
  header.writeUInt32LE(crc32(header.subarray(0, size - 4)), size - 4)
  for (const engine of engines('xz')) {
    await assert.rejects(collect(decompress('xz', chunked(packed), { engine })),
      (err: Error) => err.name === 'FormatError' && /memory/i.test(err.message), engine)
  }
})

test('the program that decodes a libarchive compression: the first one there, of a recent enough version', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-programs-'))
  try {
    // Stand-ins that print a version, as `xz --version` does.
    const fake = async (name: string, version: string): Promise<string> => {
      const path = join(dir, `${name}-${version}`)
      await writeFile(path, `#!/bin/sh\necho "${name} (fake) ${version}"\n`, { mode: 0o755 })
      return path
    }
    const oldXz = await fake('xz', '5.2.5')
    const newXz = await fake('xz', '5.4.1')
    const lzip = await fake('lzip', '1.23')
    const programs = [
      { bin: 'lzip', args: ['-dcq'], debian: 'lzip' },
      { bin: 'xz', args: ['--format=lzip', '-dcq'], debian: 'xz-utils', minVersion: [5, 4] as [number, number] }
    ]
    const on = (paths: Record<string, string>) => (bin: string): string | false => paths[bin] ?? false
    assert.deepEqual(pickProgram('lzip', programs, on({ lzip, xz: newXz })), { path: lzip, args: ['-dcq'] })
    assert.deepEqual(pickProgram('lzip', programs, on({ xz: newXz })), { path: newXz, args: ['--format=lzip', '-dcq'] })
    assert.deepEqual(pickProgram('lzip', programs, on({ xz: oldXz })), {
      problem: "lzip: decoding it needs 'lzip' (Debian package lzip) or 'xz' 5.4 or later (Debian package xz-utils), not found on PATH"
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
