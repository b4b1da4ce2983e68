/**
 * The peer listener: a second HTTP server, apart from the substituter (which stays on loopback for
 * Nix), that answers other narswarm nodes under `/narswarm/peer/v1/` (docs/peer-protocol.md):
 *
 *   GET  info                      {"protocol":1,"nodeId":…,"cdcId":…}
 *   GET  narinfo/<hashPart>        the signed narinfo of a shared NAR, byte for byte
 *   GET  manifest/<nix32 NarHash>  the NAR's manifest (binary, see protocol.ts)
 *   GET  chunk/<hex id>            one chunk's bytes
 *   POST chunks  (ids)             several chunks as frames, as stored when the peer accepts it
 *   POST have    (ids)             a bitmap: which of these chunks this node shares
 *
 * and, without a group key, the same shared NARs as an ordinary binary cache for Nix on other
 * machines (lan-cache.ts: `/nix-cache-info`, `<hash>.narinfo`, `nar/…`).
 *
 * Only what `PeerShares` allows is answered; everything else is 404, the same as absence, so a
 * stranger learns nothing from the difference. With a group key every request must carry a valid
 * MAC (401 without one, 403 with a wrong one). Every request a hostile peer can send is bounded:
 * bodies by the id limits, concurrency by `maxRequests` (503 beyond), connections and time by the
 * limits every narswarm listener applies (src/server/limits.ts), and answers go out through the shared upload throttle with backpressure.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { ChunkStore } from '../chunk/types.ts'
import type { Logger } from '../log.ts'
import { NixHash } from '../nix/hash.ts'
import { applyServerLimits, SERVER_LIMIT_DEFAULTS, type ServerLimits } from '../server/limits.ts'
import { sendStatus } from '../server/respond.ts'
import { readBody } from '../util/http-client.ts'
import type { GroupKey } from './auth.ts'
import {
  ABSENT_FRAME, acceptsStored, CHUNKS_TYPE, decodeIds, encodeBitmap, encodeManifest, MAX_BATCH_IDS, MAX_HAVE_IDS, PEER_PATH, PROTOCOL_VERSION, STORED_CHUNKS_TYPE
} from './protocol.ts'
import type { PeerShares } from './shares.ts'
import { isLanCachePath, serveLanCache, type LanCache } from './lan-cache.ts'
import { STORE_DIR } from '../nix/store-path.ts'
import { Throttle } from './throttle.ts'

export interface PeerServerInit {
  store: ChunkStore
  shares: PeerShares
  nodeId: string
  log: Logger
  groupKey?: GroupKey
  /** Bytes per second for every answer together; 0: no limit. */
  uploadLimit?: number
  /** Requests served at once; more get 503. */
  maxRequests?: number
  /** Timeouts and connection limits, the substituter's. */
  limits?: ServerLimits
  /** The store directory of the paths shared (lan-cache.ts); /nix/store by default. */
  storeDir?: string
}

/** What this listener sent, for `narswarm peers` and the metrics. */
export interface PeerServerStats {
  requests: number
  refused: number
  nars: number
  chunks: number
  bytes: number
}

export interface RunningPeerServer {
  url: string
  stats: PeerServerStats
  close: () => Promise<void>
}

const NARINFO = /^\/narinfo\/([0-9a-df-np-sv-z]{32})$/
const MANIFEST = /^\/manifest\/([0-9a-df-np-sv-z]{52})$/
const CHUNK = /^\/chunk\/([0-9a-f]{64})$/
const SLICE = 64 << 10

function createPeerServer (init: PeerServerInit): { server: Server, stats: PeerServerStats } {
  const { store, shares, log, groupKey } = init
  const throttle = new Throttle(init.uploadLimit ?? 0)
  const maxRequests = init.maxRequests ?? 64
  const stats: PeerServerStats = { requests: 0, refused: 0, nars: 0, chunks: 0, bytes: 0 }
  const info = Buffer.from(JSON.stringify({ protocol: PROTOCOL_VERSION, nodeId: init.nodeId, cdcId: store.cdcId }))
  let active = 0

  /** Writes with backpressure and the upload limit; false when the peer went away. */
  const write = async (res: ServerResponse, bytes: Uint8Array, signal: AbortSignal): Promise<boolean> => {
    for (let o = 0; o < bytes.length; o += SLICE) {
      const piece = bytes.subarray(o, o + SLICE)
      await throttle.take(piece.length, signal)
      if (!res.write(piece)) await once(res, 'drain', { signal })
      stats.bytes += piece.length
    }
    return !signal.aborted
  }
  // Nix cannot sign its requests: with a group key, only peers are answered.
  const lanCache: LanCache | undefined = groupKey === undefined ? { storeDir: init.storeDir ?? STORE_DIR, store, shares, write } : undefined

  const send = async (res: ServerResponse, body: Uint8Array, type: string, signal: AbortSignal): Promise<void> => {
    res.writeHead(200, { 'content-type': type, 'content-length': String(body.length), 'cache-control': 'no-store' })
    await write(res, body, signal)
    res.end()
  }

  const handle = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> => {
    const url = req.url ?? '/'
    const pathname = url.split('?')[0]!
    if (lanCache !== undefined && isLanCachePath(pathname)) {
      if (req.method !== 'GET' && req.method !== 'HEAD') sendStatus(res, 405, { allow: 'GET, HEAD' })
      else await serveLanCache(lanCache, req, res, pathname, signal)
      return
    }
    if (!url.startsWith(`${PEER_PATH}/`)) { sendStatus(res, 404); return }
    const path = url.slice(PEER_PATH.length)
    if (req.method !== 'GET' && req.method !== 'POST') { sendStatus(res, 405, { allow: 'GET, POST' }); return }
    let body: Buffer | undefined
    if (req.method === 'POST') {
      body = await readBody(req, MAX_HAVE_IDS * 32)
      if (body === undefined) { sendStatus(res, 413); return }
    }
    if (groupKey !== undefined) {
      const header = req.headers.authorization
      if (!groupKey.verify(header, req.method, url, body)) {
        stats.refused++
        sendStatus(res, header === undefined ? 401 : 403)
        return
      }
    }
    if (req.method === 'GET') {
      if (path === '/info') { await send(res, info, 'application/json', signal); return }
      let m = NARINFO.exec(path)
      if (m !== null) {
        const text = shares.narInfo(m[1]!)
        if (text === undefined) sendStatus(res, 404)
        else await send(res, Buffer.from(text), 'text/x-nix-narinfo', signal)
        return
      }
      m = MANIFEST.exec(path)
      if (m !== null) {
        const narHash = NixHash.fromNix32('sha256', m[1]!)
        const manifest = narHash === undefined ? undefined : shares.manifest(narHash)
        if (manifest === undefined) { sendStatus(res, 404); return }
        stats.nars++
        await send(res, encodeManifest(manifest), 'application/x-narswarm-manifest', signal)
        return
      }
      m = CHUNK.exec(path)
      if (m !== null) {
        const id = Buffer.from(m[1]!, 'hex')
        const bytes = shares.chunkShared(id) ? await store.readChunk(id, { signal }) : undefined
        if (bytes === undefined) { sendStatus(res, 404); return }
        stats.chunks++
        await send(res, bytes, 'application/octet-stream', signal)
        return
      }
    } else if (path === '/have') {
      const ids = parseIds(res, body!, MAX_HAVE_IDS)
      if (ids === undefined) return
      const held = store.has(ids)
      await send(res, encodeBitmap(ids.map((id, i) => held[i]! && shares.chunkShared(id))), 'application/octet-stream', signal)
      return
    } else if (path === '/chunks') {
      const ids = parseIds(res, body!, MAX_BATCH_IDS)
      if (ids === undefined) return
      const stored = acceptsStored(req.headers.accept)
      res.writeHead(200, { 'content-type': stored ? STORED_CHUNKS_TYPE : CHUNKS_TYPE, 'cache-control': 'no-store' })
      for (const id of ids) {
        const bytes = !shares.chunkShared(id) ? undefined : stored ? await store.readStoredChunk(id, { signal }) : await store.readChunk(id, { signal })
        const frame = Buffer.alloc(4)
        frame.writeUInt32BE(bytes === undefined ? ABSENT_FRAME : bytes.length)
        if (!await write(res, frame, signal)) return
        if (bytes !== undefined) {
          stats.chunks++
          if (!await write(res, bytes, signal)) return
        }
      }
      res.end()
      return
    }
    sendStatus(res, 404)
  }

  const server = createServer((req, res) => {
    stats.requests++
    if (active >= maxRequests) {
      stats.refused++
      req.resume()
      sendStatus(res, 503, { 'retry-after': '1' })
      return
    }
    active++
    const controller = new AbortController()
    res.once('close', () => { active--; controller.abort() })
    handle(req, res, controller.signal).catch((err: unknown) => {
      if (controller.signal.aborted) return
      log.warn({ url: req.url, err: (err as Error).message }, 'peer request failed')
      if (!res.headersSent) sendStatus(res, 500)
      else res.destroy()
    })
  })
  applyServerLimits(server, init.limits ?? SERVER_LIMIT_DEFAULTS, log)
  return { server, stats }
}

function parseIds (res: ServerResponse, body: Buffer, max: number): Uint8Array[] | undefined {
  try {
    return decodeIds(body, max)
  } catch {
    sendStatus(res, 400)
    return undefined
  }
}

export async function startPeerServer (init: PeerServerInit, listen: { host: string, port: number }): Promise<RunningPeerServer> {
  const { server, stats } = createPeerServer(init)
  server.listen(listen.port, listen.host)
  await once(server, 'listening')
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  init.log.info({ url, groupKey: init.groupKey !== undefined }, 'narswarm peer listener listening')
  return {
    url,
    stats,
    close: async () => {
      const closed = new Promise<void>(resolve => server.close(() => resolve()))
      server.closeIdleConnections()
      const grace = setTimeout(() => server.closeAllConnections(), 2_000).unref()
      await closed
      clearTimeout(grace)
    }
  }
}
