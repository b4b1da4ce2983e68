/**
 * A static file server on 127.0.0.1 that honours single byte ranges (`Range: bytes=a-b`, `a-`),
 * as a BEP 19 web seed must: BitTorrent clients fetch a web seed block by block. It records each
 * request with its range, so a test can tell a block request from a whole-file fetch.
 */
import { createServer } from 'node:http'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { once } from 'node:events'
import { join, normalize } from 'node:path'
import type { AddressInfo } from 'node:net'

export interface RangeServer {
  url: string
  requests: Array<{ path: string, range?: string }>
  close: () => Promise<void>
}

export async function startRangeServer (dir: string): Promise<RangeServer> {
  const requests: RangeServer['requests'] = []
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!
    const range = req.headers.range
    requests.push(range === undefined ? { path } : { path, range })
    const file = join(dir, normalize(path).replace(/^(\.\.[/\\])+/, ''))
    stat(file).then(st => {
      if (!st.isFile()) throw new Error('not a file')
      const m = range === undefined ? null : /^bytes=(\d+)-(\d*)$/.exec(range)
      if (m === null) {
        res.writeHead(200, { 'content-length': st.size, 'accept-ranges': 'bytes' })
        createReadStream(file).pipe(res)
        return
      }
      const start = Number(m[1])
      const end = m[2] === '' ? st.size - 1 : Math.min(Number(m[2]), st.size - 1)
      if (start > end) { res.writeHead(416, { 'content-range': `bytes */${st.size}` }).end(); return }
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${st.size}` })
      createReadStream(file, { start, end }).pipe(res)
    }).catch(() => res.writeHead(404).end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}
