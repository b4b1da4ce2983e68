import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer, request, type Server } from 'node:http'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { sendBody } from '../../src/server/send-body.ts'
import { BytePool } from '../../src/util/byte-pool.ts'

const PIECES = Array.from({ length: 400 }, () => randomBytes(64 * 1024 + 17))
const TOTAL = PIECES.reduce((n, p) => n + p.length, 0)
const sha = (parts: Uint8Array[]): string => { const h = createHash('sha256'); for (const p of parts) h.update(p); return h.digest('hex') }

async function serve (withLength: boolean): Promise<{ server: Server, url: string }> {
  const server = createServer((req, res) => {
    res.writeHead(200, withLength ? { 'content-length': String(TOTAL) } : {})
    const abort = new AbortController()
    res.once('close', () => abort.abort())
    void sendBody((async function * () { yield * PIECES })(), res, abort.signal).catch(() => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/` }
}

/** Reads the whole body, pausing 20 ms every `every` pieces when `slow`; rejects if it stalls for 10 s. */
async function read (url: string, slow: boolean, every = 50): Promise<Uint8Array[]> {
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => request(url, resolve).on('error', reject).end())
  const parts: Uint8Array[] = []
  let stalled: NodeJS.Timeout | undefined
  const watchdog = (): void => { clearTimeout(stalled); stalled = setTimeout(() => res.destroy(new Error('the body stalled')), 10_000) }
  watchdog()
  try {
    for await (const c of res) {
      parts.push(c as Uint8Array)
      watchdog()
      if (slow && parts.length % every === 0) await sleep(20)
    }
  } finally {
    clearTimeout(stalled)
  }
  return parts
}

// 26 MB in 52 batches: a response whose batches the socket takes at once must not wait for a
// 'drain' that never comes (it did, with chunked encoding); a slow client must still pace it.
for (const withLength of [true, false]) {
  for (const slow of [false, true]) {
    test(`the whole body arrives, ${withLength ? 'with Content-Length' : 'chunked'}, ${slow ? 'slow' : 'fast'} client`, async () => {
      const { server, url } = await serve(withLength)
      try {
        const parts = await read(url, slow)
        assert.equal(parts.reduce((n, p) => n + p.length, 0), TOTAL)
        assert.equal(sha(parts), sha(PIECES))
      } finally {
        server.close()
      }
    })
  }
}

// Pieces lent from a pool go back to it once the socket is done with them, and are overwritten
// by the source's next read at once: a piece handed back too early would reach the client
// altered. A slow client keeps writes queued in the socket, where that would show.
for (const slow of [false, true]) {
  test(`pieces lent from a pool are reused only after the socket took them, ${slow ? 'slow' : 'fast'} client`, async () => {
    const pool = new BytePool(64 * 1024, 16)
    const distinct = new Set<ArrayBufferLike>()
    const count = 600
    const expected = Array.from({ length: count }, (_, i) => Buffer.alloc(pool.size, i % 251))
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-length': String(count * pool.size) })
      const abort = new AbortController()
      res.once('close', () => abort.abort())
      void sendBody((async function * () {
        for (let i = 0; i < count; i++) {
          const buffer = pool.take()
          distinct.add(buffer.buffer)
          buffer.fill(i % 251)
          yield pool.lend(buffer.subarray(0), buffer)
        }
      })(), res, abort.signal).catch(() => {})
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    try {
      const parts = await read(`http://127.0.0.1:${(server.address() as { port: number }).port}/`, slow, 5)
      assert.equal(sha(parts), sha(expected))
      assert.ok(distinct.size < count / 4, `${distinct.size} buffers for ${count} pieces: the pool was not reused`)
    } finally {
      server.close()
    }
  })
}
