/**
 * A static HTTP server over a binary-cache directory, on 127.0.0.1, with faults that a test can
 * switch on per path: a flipped byte, a truncated body, a hang, a status code, a delay. It stands in
 * for an upstream cache (or a hostile one) and counts the requests it gets.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import zlib from 'node:zlib'
import { once } from 'node:events'
import { join, normalize } from 'node:path'
import type { AddressInfo } from 'node:net'

export type Fault =
  | { kind: 'flip', offset?: number }         // flip one byte (default: the middle) of the file
  | { kind: 'truncate', keep: number, clean?: boolean } // send only `keep` bytes; clean: honest Content-Length
  | { kind: 'hang' }                           // accept, never answer
  | { kind: 'status', status: number }
  | { kind: 'body', body: string }             // replace the body
  | { kind: 'delay', ms: number }              // answer after a delay
  | { kind: 'stall', after: number }           // send `after` bytes of the body, then nothing more
  | { kind: 'encode', codings: string[] }      // send the file with these Content-Encodings, applied in order
  | { kind: 'redirect', to: (path: string) => string, status?: number } // answer 302 (or `status`) to another URL

export interface CacheServer {
  url: string
  /** Faults by request path (e.g. `/nar/….nar.xz`) or by a predicate on the path. */
  faults: Array<{ match: (path: string) => boolean, fault: Fault }>
  requests: string[]
  /** The paths of requests that carried an `Authorization` header. */
  authorized: string[]
  close: () => Promise<void>
}

export interface CacheServerOptions {
  /** Address to listen on; default 127.0.0.1 (others only inside a test's own network namespace). */
  host?: string
  /** Called when a response is over, with the body bytes it carried. */
  onServed?: (path: string, bytes: number) => void
  /** Every request without exactly this `Authorization` header gets 401. */
  authorization?: string
  /** Serve HTTPS with this key and certificate (PEM). */
  tls?: { key: string, cert: string }
}

export async function startCacheServer (dir: string, options: CacheServerOptions = {}): Promise<CacheServer> {
  const faults: CacheServer['faults'] = []
  const requests: string[] = []
  const authorized: string[] = []
  const hanging = new Set<import('node:http').ServerResponse>()
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0]!
    requests.push(`${req.method} ${path}`)
    if (req.headers.authorization !== undefined) authorized.push(path)
    let bytes = 0
    if (options.onServed !== undefined) res.once('close', () => options.onServed!(path, bytes))
    if (options.authorization !== undefined && req.headers.authorization !== options.authorization) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="cache"' }).end()
      return
    }
    const fault = faults.find(f => f.match(path))?.fault
    const serve = async (): Promise<void> => {
      if (fault?.kind === 'hang') { hanging.add(res); return }
      if (fault?.kind === 'status') { res.writeHead(fault.status).end(); return }
      if (fault?.kind === 'redirect') { res.writeHead(fault.status ?? 302, { location: fault.to(path) }).end(); return }
      if (fault?.kind === 'body') { res.writeHead(200, { 'content-length': Buffer.byteLength(fault.body) }).end(fault.body); return }
      const file = join(dir, normalize(path).replace(/^(\.\.[/\\])+/, ''))
      let size: number
      try {
        const st = await stat(file)
        if (!st.isFile()) throw new Error('not a file')
        size = st.size
      } catch {
        res.writeHead(404).end()
        return
      }
      if (fault?.kind === 'delay') await new Promise(resolve => setTimeout(resolve, fault.ms))
      if (fault?.kind === 'stall') {
        hanging.add(res)
        res.writeHead(200, { 'content-length': size })
        createReadStream(file, { end: fault.after - 1 }).pipe(res, { end: false })
        return
      }
      if (fault?.kind === 'encode') {
        let body: Buffer = await readFile(file)
        for (const coding of fault.codings) body = encodeContent(coding, body)
        res.writeHead(200, { 'content-length': body.length, 'content-encoding': fault.codings.join(', ') })
        bytes = body.length
        res.end(req.method === 'HEAD' ? undefined : body)
        return
      }
      if (fault?.kind === 'truncate') {
        res.writeHead(200, { 'content-length': fault.clean === true ? fault.keep : size })
        const stream = createReadStream(file, { end: fault.keep - 1 })
        stream.pipe(res, { end: false })
        stream.on('end', () => (fault.clean === true ? res.end() : res.destroy()))
        return
      }
      res.writeHead(200, { 'content-length': size })
      if (req.method === 'HEAD') { res.end(); return }
      const flipAt = fault?.kind === 'flip' ? (fault.offset ?? Math.floor(size / 2)) : -1
      let offset = 0
      const stream = createReadStream(file)
      stream.on('data', (data: string | Buffer) => {
        let chunk = Buffer.from(data)
        if (flipAt >= offset && flipAt < offset + chunk.length) {
          chunk[flipAt - offset]! ^= 0x01
        }
        offset += chunk.length
        bytes += chunk.length
        if (!res.write(chunk)) { stream.pause(); res.once('drain', () => stream.resume()) }
      })
      stream.on('end', () => res.end())
      stream.on('error', () => res.destroy())
    }
    serve().catch(() => res.destroy())
  }
  const server: Server = options.tls === undefined ? createServer(handler) : createTlsServer(options.tls, handler)
  const host = options.host ?? '127.0.0.1'
  server.listen(0, host)
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `${options.tls === undefined ? 'http' : 'https'}://${host}:${port}`,
    faults,
    requests,
    authorized,
    close: async () => {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

/**
 * `bytes` in a content coding, by encoders independent of narswarm's (node:zlib, the `xz` and
 * `bzip2` programs); a coding none of them knows leaves the bytes as they are.
 */
export function encodeContent (coding: string, bytes: Buffer): Buffer {
  switch (coding) {
    case 'gzip': case 'x-gzip': return zlib.gzipSync(bytes)
    case 'br': return zlib.brotliCompressSync(bytes)
    case 'zstd': return zlib.zstdCompressSync(bytes)
    case 'xz': case 'bzip2': {
      const run = spawnSync(coding, ['-c'], { input: bytes, maxBuffer: 1 << 30 })
      if (run.status !== 0) throw new Error(`${coding} -c failed: ${String(run.stderr)}`)
      return run.stdout
    }
    default: return bytes
  }
}
