import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer, request, type Server } from 'node:http'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { sendBody } from '../../src/server/send-body.ts'

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

/** Reads the whole body, pausing now and then when `slow`; rejects if it stalls for 10 s. */
async function read (url: string, slow: boolean): Promise<Uint8Array[]> {
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => request(url, resolve).on('error', reject).end())
  const parts: Uint8Array[] = []
  let stalled: NodeJS.Timeout | undefined
  const watchdog = (): void => { clearTimeout(stalled); stalled = setTimeout(() => res.destroy(new Error('the body stalled')), 10_000) }
  watchdog()
  try {
    for await (const c of res) {
      parts.push(c as Uint8Array)
      watchdog()
      if (slow && parts.length % 50 === 0) await sleep(20)
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
