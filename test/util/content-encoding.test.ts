/**
 * Content-Encoding taken off downloaded bodies: every coding narswarm reads, stacked codings,
 * header forms, an unknown coding, a corrupt layer and a bomb, with bytes made by encoders
 * independent of narswarm's (test/helpers/cache-server.ts).
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { FormatError } from '../../src/errors.ts'
import { CONTENT_CODINGS, contentCodings, decodeContentEncoding } from '../../src/util/content-encoding.ts'
import { readBody } from '../../src/util/http-client.ts'
import { encodeContent } from '../helpers/cache-server.ts'

async function * pieces (bytes: Uint8Array, size = 4096, counter?: { read: number }): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) {
    if (counter !== undefined) counter.read = i + size
    yield bytes.subarray(i, i + size)
  }
}

async function decoded (header: string | string[] | undefined, bytes: Uint8Array): Promise<Buffer> {
  return (await readBody(decodeContentEncoding(header, pieces(bytes)), 1 << 30))!
}

describe('Content-Encoding', () => {
  // Text like a narinfo, and enough of it that every decoder works through several pieces.
  const plain = Buffer.from(`StorePath: /nix/store/${'a'.repeat(32)}-hello\nURL: nar/x.nar.xz\n`.repeat(3000) + randomBytes(50_000).toString('hex'))

  // `compress` has no encoder on these machines (Debian's ncompress); its decoder is the one of
  // Nix's compress caches, tested in test/e2e/archive-compressions.test.ts.
  for (const coding of Object.keys(CONTENT_CODINGS).filter(c => !c.includes('compress'))) {
    test(`${coding} comes off`, async () => {
      assert.deepEqual(await decoded(coding, encodeContent(coding, plain)), plain)
    })
  }

  test('stacked codings come off in reverse order; case, spaces, identity and repeated headers', async () => {
    const twice = encodeContent('br', encodeContent('gzip', plain))
    assert.deepEqual(await decoded('gzip, br', twice), plain)
    assert.deepEqual(await decoded(['GZIP', ' identity ', 'Br'], twice), plain)
    assert.deepEqual(contentCodings('identity'), [])
    assert.deepEqual(contentCodings(undefined), [])
    assert.deepEqual(await decoded('identity', plain), plain)
    assert.deepEqual(await decoded(undefined, plain), plain)
  })

  test('an unknown coding is a FormatError that names it, and the body is let go', async () => {
    let closed = false
    async function * body (): AsyncGenerator<Uint8Array> {
      try { yield plain } finally { closed = true }
    }
    await assert.rejects(readBody(decodeContentEncoding('gzip, deflate', body()), 1 << 20),
      (err: Error) => err instanceof FormatError && /unsupported Content-Encoding 'deflate'/.test(err.message))
    assert.ok(closed)
  })

  test('a corrupt or mislabelled layer is a FormatError that names the coding', async () => {
    const gz = encodeContent('gzip', plain)
    gz[gz.length >> 1]! ^= 0xff
    await assert.rejects(decoded('gzip', gz), (err: Error) => err instanceof FormatError && /^Content-Encoding gzip: /.test(err.message))
    await assert.rejects(decoded('xz', plain), (err: Error) => err instanceof FormatError && /^Content-Encoding xz: /.test(err.message))
    // Stacked: the layer that failed is named, once.
    await assert.rejects(decoded('gzip, br', encodeContent('gzip', plain)), (err: Error) => err instanceof FormatError && /^Content-Encoding br: (?!.*Content-Encoding)/.test(err.message))
  })

  test('a bomb is decoded only as far as it is read', async () => {
    // 256 MiB of zeros in 255 KiB of gzip: 1 MiB of output takes a few KiB of it, plus the
    // decoder's bounded read-ahead, not the whole body.
    const bomb = encodeContent('gzip', Buffer.alloc(256 << 20))
    const counter = { read: 0 }
    const body = await readBody(decodeContentEncoding('gzip', pieces(bomb, 1024, counter)), 1 << 20)
    assert.equal(body, undefined, 'over the limit')
    assert.ok(counter.read <= 128 << 10, `read ${counter.read} of ${bomb.length} compressed bytes for 1 MiB of output`)
  })
})
