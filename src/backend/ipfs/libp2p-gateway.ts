/**
 * The trustless gateway over libp2p: HTTP/1.1 on a libp2p stream (protocol `/http/1.1`, listed
 * as `/ipfs/gateway` at path `/` in `/.well-known/libp2p/protocols`), the way kubo serves its
 * gateway to peers with `Experimental.GatewayOverLibp2p`. The embedded node serves its own blocks
 * this way (raw blocks and CAR streams, see trustless-gateway.ts) on the connections it already
 * has, and fetches a NAR's DAG from a peer as one CAR stream — at the speed of the connection
 * rather than a block per round trip as with bitswap.
 *
 * Both ends keep memory bounded: the server writes a chunk only when the stream has room, and
 * the client pauses the stream (withholding the flow-control window, so the peer stops sending)
 * while more than `CLIENT_BUFFER` bytes of body wait for the reader. A paused stream still takes
 * in what the window allowed (at most 4 MiB, see node.ts), so a stream holds at most about 9 MiB.
 */
import { HTTPParser } from '@achingbrain/http-parser-js'
import { STATUS_CODES } from 'node:http'
import { HTTP_PROTOCOL, http } from '@libp2p/http'
import type { HeaderInfo } from '@libp2p/http-utils'
import type { Connection, IdentifyResult, Libp2p, Peer, PeerId, Stream } from '@libp2p/interface'
import { raceEvent } from 'race-event'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../../log.ts'
import type { CarSource } from './car-feed.ts'
import { httpCarSource, peerGatewayBases, type PeerGateways } from './http-gateway.ts'
import { answerGatewayRequest, carRequest, type LocalBlock } from './trustless-gateway.ts'

const CLIENT_BUFFER = 4 << 20
const SERVER_BUFFER = 4 << 20
const MAX_RESPONSE_HEADER = 16 << 10

/** The libp2p `http` service, answering gateway requests from `local`. */
export function gatewayService (local: LocalBlock, log: Logger): ReturnType<typeof http> {
  const service = http({
    server: {
      inject: async (info: HeaderInfo, stream: Stream) => {
        await serve(info, stream, local).catch(err => {
          log.debug({ url: info.url, err: (err as Error).message }, 'ipfs gateway answer not completed')
          stream.abort(err as Error)
        })
      }
    }
  })
  return components => {
    const instance = service(components)
    // Listed for peers that look the gateway up; requests go to the server above by path.
    instance.handle('/ipfs/gateway', { path: '/', handler: async () => new Response('trustless gateway: GET /ipfs/<cid>\n', { status: 404 }) })
    return instance
  }
}

async function serve (info: HeaderInfo, stream: Stream, local: LocalBlock): Promise<void> {
  const answer = await answerGatewayRequest(info.method, new URL(info.url, 'http://peer'), info.headers.get('accept'), local)
  const head = [`HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}`, ...Object.entries(answer.headers).map(([k, v]) => `${k}: ${v}`), 'connection: close', '', '']
  await send(stream, Buffer.from(head.join('\r\n')))
  if (answer.body !== undefined) {
    for await (const chunk of answer.body) await send(stream, chunk)
  }
  await stream.close()
}

/**
 * Sends a chunk and waits while more than `SERVER_BUFFER` bytes are queued. `send` returning true
 * is not enough: a yamux stream whose peer has not opened its window keeps accepting (and
 * buffering) data, and says so only through its write buffer and a 'drain' on the next window
 * update.
 */
async function send (stream: Stream, chunk: Uint8Array): Promise<void> {
  if (!stream.send(chunk)) await stream.onDrain()
  while (stream.writeBufferLength > SERVER_BUFFER) {
    if (stream.status !== 'open') throw new Error(`stream ${stream.status}`)
    await new Promise<void>(resolve => {
      const done = (): void => { stream.removeEventListener('drain', done); stream.removeEventListener('close', done); resolve() }
      stream.addEventListener('drain', done)
      stream.addEventListener('close', done)
    })
  }
}

export interface HttpAnswer {
  status: number
  body: AsyncIterable<Uint8Array>
  /** Drops the answer unread (resets the stream unless it is complete). */
  cancel: () => void
}

/**
 * `GET path` on a new `/http/1.1` stream of `connection`. The body is pulled: the stream is paused
 * while the reader lags. Aborting `signal`, or leaving the body early, resets the stream.
 */
export async function httpGet (connection: Connection, path: string, headers: Record<string, string>, signal: AbortSignal): Promise<HttpAnswer> {
  const stream = await connection.newStream(HTTP_PROTOCOL, { signal })
  const onAbort = (): void => { stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
  signal.addEventListener('abort', onAbort, { once: true })
  const queue: Uint8Array[] = []
  let queued = 0
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const notify = (): void => { wake?.(); wake = undefined }
  const answer = Promise.withResolvers<number>()
  const parser = new HTTPParser('RESPONSE')
  parser.maxHeaderSize = MAX_RESPONSE_HEADER
  parser[HTTPParser.kOnHeadersComplete] = (info: { statusCode: number }) => { answer.resolve(info.statusCode) }
  parser[HTTPParser.kOnBody] = (chunk: Uint8Array) => {
    queue.push(chunk)
    queued += chunk.length
    // Paused after the current dispatch, not inside it: a pause made while `resume()` is
    // dispatching the buffered data would be undone by the window update `resume()` sends next.
    if (queued > CLIENT_BUFFER) queueMicrotask(() => { if (queued > CLIENT_BUFFER && stream.readStatus === 'readable') stream.pause() })
    notify()
  }
  parser[HTTPParser.kOnMessageComplete] = () => { ended = true; notify() }
  const fail = (err: Error): void => { failure ??= err; answer.reject(err); notify() }
  stream.addEventListener('message', evt => {
    const data = evt.data.subarray()
    const result = parser.execute(data as Buffer, 0, data.byteLength)
    if (result instanceof Error) { fail(result); stream.abort(result) }
  })
  stream.addEventListener('remoteCloseWrite', () => {
    const result = parser.finish()
    if (result instanceof Error) fail(new Error(`the answer is cut short: ${result.message}`))
    ended = true
    answer.reject(new Error('the peer closed the stream before answering'))
    notify()
  })
  stream.addEventListener('close', evt => { if (evt.error !== undefined) fail(evt.error); else { ended = true; notify() } })
  answer.promise.catch(() => {})
  const request = [`GET ${path} HTTP/1.1`, 'host: peer', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', '']
  stream.send(Buffer.from(request.join('\r\n')))
  await stream.close({ signal }).catch(() => {}) // our half only: the request is complete
  const cancel = (): void => {
    signal.removeEventListener('abort', onAbort)
    if (!ended || failure !== undefined) stream.abort(new Error('answer no longer read'))
  }
  let status: number
  try {
    status = await answer.promise
  } catch (err) {
    cancel()
    throw err
  }
  async function * body (): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const chunk = queue.shift()
        if (chunk !== undefined) {
          queued -= chunk.length
          if (queued <= CLIENT_BUFFER / 2 && stream.readStatus === 'paused') stream.resume()
          yield chunk
          continue
        }
        if (failure !== undefined) throw failure
        if (ended) return
        await new Promise<void>(resolve => { wake = resolve })
      }
    } finally {
      cancel()
    }
  }
  return { status, body: body(), cancel }
}

/**
 * CAR sources: the connected peers that serve a trustless gateway, each asked for the file's CAR —
 * over plain HTTP when the peer announces a gateway on the address it is connected from (see
 * http-gateway.ts) and `gateways` is given, else over HTTP on a libp2p stream when it speaks
 * `/http/1.1`.
 */
export function peerCarSources (libp2p: Libp2p, gateways: PeerGateways | undefined, log: Logger): CarSource[] {
  const peers = new Map<string, PeerId>()
  for (const connection of libp2p.getConnections()) {
    if (connection.status === 'open') peers.set(connection.remotePeer.toString(), connection.remotePeer)
  }
  return [...peers.values()].map(peer => ({
    name: `peer ${peer.toString()}`,
    open: async (root: CID, range: { from: number, to?: number }, signal: AbortSignal) => {
      const known = await identified(libp2p, peer, signal)
      const connection = libp2p.getConnections(peer).find(c => c.status === 'open')
      if (connection === undefined) return undefined
      const remoteIp = /^\/ip[46]\/([^/]+)\//.exec(connection.remoteAddr.toString())?.[1] ?? ''
      for (const base of gateways === undefined ? [] : peerGatewayBases(known.certifiedAddresses, remoteIp).filter(b => gateways.usable(b))) {
        try {
          const body = await httpCarSource(base, `peer ${peer.toString()} at ${base}`, gateways!.dispatcher, false).open(root, range, signal)
          if (body !== undefined) log.debug({ peer: peer.toString(), gateway: base, root: root.toString(), ...range }, 'ipfs CAR stream from peer over http')
          return body
        } catch (err) {
          signal.throwIfAborted()
          gateways!.failed(base)
          log.debug({ peer: peer.toString(), gateway: base, err: (err as Error).message }, 'ipfs peer gateway over http failed; using libp2p for a minute')
        }
      }
      if (!known.protocols.includes(HTTP_PROTOCOL)) return undefined
      const { path, accept } = carRequest(root, range, false)
      const answer = await httpGet(connection, `/${path}`, { accept }, signal)
      if (answer.status !== 200) answer.cancel()
      if (answer.status === 404 || answer.status === 410) return undefined
      if (answer.status !== 200) throw new Error(`HTTP ${answer.status}`)
      log.debug({ peer: peer.toString(), root: root.toString(), ...range }, 'ipfs CAR stream from peer')
      return answer.body
    }
  }))
}

/** How long a fetch waits for a just-connected peer to say which protocols it speaks. */
const IDENTIFY_WAIT_MS = 2_000

/**
 * What the peer store knows of `peer` once identify has run: a fetch that starts right after a
 * connection is made waits (up to IDENTIFY_WAIT_MS) for the peer's protocol list rather than
 * taking the list's absence for a peer without a gateway.
 */
async function identified (libp2p: Libp2p, peer: PeerId, signal: AbortSignal): Promise<{ protocols: string[], certifiedAddresses: string[] }> {
  const known = async (): Promise<Peer | undefined> => await libp2p.peerStore.get(peer, { signal }).catch(() => undefined)
  const done = (p: Peer | undefined): boolean => p !== undefined && (p.metadata.has('AgentVersion') || p.metadata.has('ProtocolVersion'))
  // Listening before looking, so that an identify finishing in between is not missed.
  const stop = new AbortController()
  const identify = raceEvent(libp2p, 'peer:identify', AbortSignal.any([signal, stop.signal, AbortSignal.timeout(IDENTIFY_WAIT_MS)]), {
    filter: (evt: CustomEvent<IdentifyResult>) => evt.detail.peerId.equals(peer)
  }).catch(() => {})
  let now = await known()
  if (!done(now)) {
    await identify
    signal.throwIfAborted()
    now = await known()
  }
  stop.abort()
  // Only addresses from the peer's own signed record: anyone can tell the peer store other ones.
  return { protocols: now?.protocols ?? [], certifiedAddresses: now?.addresses.filter(a => a.isCertified).map(a => a.multiaddr.toString()) ?? [] }
}
