import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { constants, zstdCompressSync } from 'node:zlib'
import { compress, decompress, findBinary } from '../../src/nix/compression.ts'
import { frameLength, rawFrame, rawFrames } from '../../src/nix/zstd-frames.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'
import { plainNarOf } from '../helpers/closure.ts'
import { collect } from '../helpers/bytes.ts'

// node:zlib stops at the end of the first frame, so the zstd program is the reference decoder.
const noZstd = findBinary('zstd') === false ? 'the zstd program is not on PATH (.ci/run installs it)' : false

function unzstd (stream: Uint8Array): Buffer {
  const r = spawnSync('zstd', ['-dc'], { input: stream, maxBuffer: 64 << 20 })
  assert.equal(r.status, 0, String(r.stderr))
  return r.stdout
}

test('raw frames of every header size decode, alone and between compressed frames', { skip: noZstd }, () => {
  // Content sizes at the edges of the 1-, 2- and 4-byte size fields and of the 128 KiB block.
  for (const n of [1, 255, 256, 65791, 65792, 131072, 131073, 300_000]) {
    const bytes = randomBytes(n)
    const alone = Buffer.concat(rawFrame(bytes))
    assert.equal(alone.length, n + (n < 256 ? 6 : n < 65792 ? 7 : 9) + 3 * Math.ceil(n / 131072), `${n}: headers only`)
    assert.ok(unzstd(alone).equals(bytes), `${n} bytes alone`)
    const packed = zstdCompressSync(Buffer.from('between'))
    const mixed = Buffer.concat([...rawFrame(bytes), packed, ...rawFrame(bytes)])
    assert.ok(unzstd(mixed).equals(Buffer.concat([bytes, Buffer.from('between'), bytes])), `${n} bytes mixed`)
  }
})

test('an empty piece makes no frame; rawFrames wraps each piece of a stream', { skip: noZstd }, async () => {
  assert.deepEqual(rawFrame(new Uint8Array(0)), [])
  const pieces = [randomBytes(10), new Uint8Array(0), randomBytes(200_000)]
  const stream = await collect(rawFrames((async function * () { yield * pieces })()))
  assert.ok(unzstd(stream).equals(Buffer.concat(pieces)))
})

test('Nix reads a NAR sent as compressed and raw frames in turn', { skip: nixSkip() || noZstd }, async () => {
  const nix = await makeNixEnv()
  try {
    const src = join(nix.dir, 'src')
    await mkdir(src)
    // Text compresses, random bytes do not: the chunk store keeps one compressed and the other raw.
    await writeFile(join(src, 'text'), 'narswarm '.repeat(40_000))
    await writeFile(join(src, 'random'), randomBytes(300_000))
    const path = (await nix.run('nix-store', ['--add', src])).trim()
    const plain = join(nix.dir, 'plain')
    const { name, narinfo, nar } = await plainNarOf(nix, path, plain)
    const frames: Uint8Array[] = []
    for (let at = 0, i = 0; at < nar.length; at += 65536, i++) {
      const piece = nar.subarray(at, at + 65536)
      frames.push(...(i % 2 === 0 ? [zstdCompressSync(piece)] : rawFrame(piece)))
    }
    await writeFile(join(plain, 'nar', 'x.nar.zst'), Buffer.concat(frames))
    await writeFile(join(plain, name), narinfo.replace(/^URL: .*$/m, 'URL: nar/x.nar.zst').replace(/^Compression: .*$/m, 'Compression: zstd')
      .replace(/^File(Hash|Size): .*\n/gm, ''))
    const out = join(nix.dir, 'out')
    await nix.run('nix', ['copy', '--from', `file://${plain}`, '--to', `local?root=${out}`, path, '--option', 'require-sigs', 'false'])
    assert.ok((await readFile(join(out, path, 'random'))).equals(await readFile(join(src, 'random'))))
  } finally {
    await nix.cleanup()
  }
})

test('narswarm decodes concatenated zstd frames as Nix does, skippable frames included; a stream cut inside a frame is refused', async () => {
  const parts = [randomBytes(100), Buffer.from('text '.repeat(50_000)), randomBytes(200_000), Buffer.alloc(300_000, 7)]
  // A skippable frame (magic 0x184D2A50, 4-byte length) between compressed and raw frames.
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0]), Buffer.from('12345')])
  const stream = Buffer.concat([zstdCompressSync(parts[0]!), ...rawFrame(parts[1]!), skippable, zstdCompressSync(parts[2]!), zstdCompressSync(parts[3]!, { params: { [constants.ZSTD_c_checksumFlag]: 1 } })])
  for (const piece of [1, 7, 4096, 1 << 20]) {
    const out = await collect(decompress('zstd', chunked(stream, piece), { engine: 'library' }))
    assert.ok(Buffer.from(out).equals(Buffer.concat(parts)), `in pieces of ${piece}`)
  }
  // Bytes after the last frame are ignored, as before.
  assert.ok(Buffer.from(await collect(decompress('zstd', chunked(Buffer.concat([stream, Buffer.from('xy')]), 4096), { engine: 'library' }))).equals(Buffer.concat(parts)))
  await assert.rejects(collect(decompress('zstd', chunked(stream.subarray(0, stream.length - 100), 4096), { engine: 'library' })), { name: 'FormatError' })
  await assert.rejects(collect(decompress('zstd', chunked(Buffer.from('not zstd at all'), 4096), { engine: 'library' })), { name: 'FormatError' })
})

async function * chunked (bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size)
}

test('a frame whose checksum completes a batch for the decoder loses nothing', async () => {
  // One-shot frames of random bytes, given whole, are one batch up to their 4-byte checksum;
  // for some of these sizes the checksum is what brings the batch to 64 KiB.
  let boundary = 0
  for (let size = 65_480; size <= 65_540; size++) {
    const input = randomBytes(size)
    const frame = zstdCompressSync(input, { params: { [constants.ZSTD_c_checksumFlag]: 1 } })
    if (frame.length >= 65_536 && frame.length < 65_540) boundary++
    const out = Buffer.from(await collect(decompress('zstd', (async function * () { yield frame })(), { engine: 'library' })))
    assert.ok(out.equals(input), `${size} bytes`)
  }
  assert.ok(boundary > 0, 'a checksum on the boundary was tried')
})

test('what narswarm compresses as zstd (one frame, content checksum) decodes to the same bytes, whatever its size', async () => {
  // Sizes where the frame's last block or its checksum falls at a batch boundary: 33554431 lost
  // its checksum once.
  for (const size of [1, 65535, 65536, 65537, (1 << 20) + 1, 33554431]) {
    // Random bytes: zstd stores them in raw blocks, whose sizes are known in advance.
    const input = randomBytes(size)
    const packed = Buffer.from(await collect(compress('zstd', chunked(input, 65536), { engine: 'library' })))
    const out = Buffer.from(await collect(decompress('zstd', chunked(packed, 65536), { engine: 'library' })))
    assert.ok(out.equals(input), `${size} bytes`)
  }
})

test('frameLength: the first frame of a buffer from its headers; undefined for anything that does not start with a whole frame', () => {
  const text = Buffer.from('a chunk of text, compressible text, '.repeat(4000))
  for (const frame of [
    zstdCompressSync(text),
    zstdCompressSync(text, { params: { [constants.ZSTD_c_checksumFlag]: 1 } }),
    zstdCompressSync(randomBytes(200_000)),
    zstdCompressSync(Buffer.alloc(100_000)),
    Buffer.concat(rawFrame(randomBytes(300_000)))
  ]) {
    assert.equal(frameLength(frame), frame.length)
    assert.equal(frameLength(Buffer.concat([frame, zstdCompressSync(text)])), frame.length, 'a second frame is not counted')
    assert.equal(frameLength(frame.subarray(0, frame.length - 1)), undefined, 'cut short')
  }
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18]), Buffer.from([4, 0, 0, 0]), Buffer.alloc(4)])
  assert.equal(frameLength(skippable), undefined)
  assert.equal(frameLength(Buffer.from('not a frame at all')), undefined)
  assert.equal(frameLength(new Uint8Array(0)), undefined)
  // A block of the reserved type (3).
  assert.equal(frameLength(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x20, 4, 0b111, 0, 0, 1, 2, 3, 4)), undefined)
})
