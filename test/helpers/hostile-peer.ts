/**
 * A hostile LAN peer for tests: it speaks the peer protocol by relaying a real peer's answers, and
 * breaks them the way a switched `fault` says: chunks (raw or compressed) with a flipped byte, the manifest of another
 * NAR, a stall or a vanishing connection in the middle of a chunk transfer, or no answer at all.
 * It counts the requests it got.
 */
import { createServer, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import type { AddressInfo, Socket } from 'node:net'

export type PeerFault = 'none' | 'wrong-chunk' | 'other-manifest' | 'stall' | 'vanish' | 'dead'

export interface HostilePeer {
  url: string
  fault: PeerFault
  requests: string[]
  close: () => Promise<void>
}

/**
 * `delay` (ms) holds every answer back: a slow but honest relay ranks behind fast hostile ones.
 * `legacy`: the relay does not pass on what a request accepts, so the real peer answers as a node
 * that predates chunk files sent as stored (raw chunks only).
 */
export async function startHostilePeer (real: string, fault: PeerFault, options: { delay?: number, legacy?: boolean } = {}): Promise<HostilePeer> {
  const sockets = new Set<Socket>()
  const hanging = new Set<ServerResponse>()
  const peer: HostilePeer = { url: '', fault, requests: [], close: async () => {} }
  const server = createServer((req, res) => {
    peer.requests.push(`${req.method} ${req.url}`)
    const parts: Buffer[] = []
    req.on('data', (b: Buffer) => parts.push(b))
    req.on('end', () => {
      const relay = async (): Promise<void> => {
        if (peer.fault === 'dead') { hanging.add(res); return }
        if (options.delay !== undefined) await new Promise(resolve => setTimeout(resolve, options.delay))
        const headers: Record<string, string> = {}
        if (req.headers['content-type'] !== undefined) headers['content-type'] = req.headers['content-type']
        if (req.headers.authorization !== undefined) headers.authorization = req.headers.authorization
        if (req.headers.accept !== undefined && options.legacy !== true) headers.accept = req.headers.accept
        const answer = await fetch(`${real}${req.url}`, { method: req.method, headers, body: req.method === 'POST' ? Buffer.concat(parts) : undefined })
        let body = Buffer.from(await answer.arrayBuffer())
        const url = req.url ?? ''
        if (answer.status === 200 && url.includes('/manifest/') && peer.fault === 'other-manifest') {
          // Same layout, another NarHash: the manifest of some other NAR.
          body = Buffer.from(body)
          randomBytes(32).copy(body, 5 + body[4]!)
        }
        const chunks = answer.status === 200 && url.endsWith('/chunks')
        if (chunks && peer.fault === 'wrong-chunk' && body.length > 4) {
          body = Buffer.from(body)
          body[body.length - 1]! ^= 0x01
        }
        res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/octet-stream' })
        if (chunks && (peer.fault === 'stall' || peer.fault === 'vanish')) {
          res.write(body.subarray(0, Math.floor(body.length / 2)))
          if (peer.fault === 'vanish') setTimeout(() => res.socket?.destroy(), 20)
          else hanging.add(res)
          return
        }
        res.end(body)
      }
      relay().catch(() => res.destroy())
    })
  })
  server.on('connection', s => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  peer.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  peer.close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
  }
  return peer
}

/**
 * A peer whose host is gone: a port that never completes a TCP handshake, so connecting waits for
 * the connect timeout. It is a listening socket that accepts nothing, its queue filled by one
 * connection (Linux then drops further SYNs); Node cannot listen without accepting, so python3
 * holds it. Undefined when python3 is not installed.
 */
export async function startUnreachablePeer (): Promise<{ url: string, close: () => void } | undefined> {
  const script = [
    'import socket, sys',
    's = socket.socket()', "s.bind(('127.0.0.1', 0))", 's.listen(0)',
    'held = [socket.create_connection(s.getsockname())]',
    'print(s.getsockname()[1], flush=True)',
    'sys.stdin.read()'
  ].join('\n')
  const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  const port = await new Promise<string | undefined>(resolve => {
    child.once('error', () => resolve(undefined))
    child.stdout!.once('data', (d: Buffer) => resolve(String(d).trim()))
  })
  if (port === undefined) return undefined
  return { url: `http://127.0.0.1:${port}`, close: () => { child.stdin!.end() } }
}
