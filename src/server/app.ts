/**
 * The substituter's HTTP server: the binary-cache protocol as Nix and Lix speak it.
 *
 *   GET|HEAD /nix-cache-info              StoreDir, WantMassQuery, Priority
 *   GET|HEAD /<32-char hash>.narinfo       narinfo, rewritten to point at our NAR URL
 *   GET|HEAD /nar/<52-char narHash>.nar    the NAR, uncompressed and verified; Range: bytes=N-;
 *            [?hash=<32-char hash part>]   the store path, to find the NAR again if narswarm forgot it
 *   GET|HEAD /nar/<52-char narHash>.nar.zst  the same as zstd, offered to Nix and Lix for NARs the
 *            [?hash=<32-char hash part>]   chunk store holds (zstd-nar.ts); no Range
 *   GET|HEAD /log/<drv>, /<hash>.ls,       build logs, NAR listings and realisations, relayed from the
 *            /realisations/…, /build-trace-v2/…   upstreams (side-files.ts)
 *   GET|HEAD /narswarm/v1/…                this narswarm's index, for other narswarms' http+ mappers
 *   GET|HEAD /narswarm/peers               the LAN peers this node knows, as JSON (`narswarm peers`)
 *   GET|HEAD / /health /status.json /metrics   for people and monitoring (ops-routes.ts)
 *                                          (loopback clients only unless `index-api = "public"`)
 *
 * Everything else is 404, including malformed hashes (a 400 would abort Nix). Paths are matched
 * after dropping the query string and collapsing `//` (Nix 2.8 produces `//nar/…` for absolute-path
 * URLs). Methods other than GET and HEAD get 405: Nix tries `PUT /nix-cache-info` only when that
 * file is missing, which never happens here.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { RangeNotSatisfiableError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { serializeCacheInfo } from '../nix/cache-info.ts'
import { isHashPart } from '../nix/store-path.ts'
import { parseRange } from './range.ts'
import { sendStatus, sendText, statusFor } from './respond.ts'
import type { Substituter } from './substituter.ts'
import { handleIndexRequest, type IndexApiMode } from './index-api.ts'
import { applyServerLimits, isLoopbackAddress, SERVER_LIMIT_DEFAULTS, type ServerLimits } from './limits.ts'
import type { Mapper } from '../types.ts'
import type { Observer } from './observer.ts'
import { handleOpsRequest, OPS_ROUTES } from './ops-routes.ts'
import { decodesZstd, openZstd } from './zstd-nar.ts'
import { sendBody } from './send-body.ts'
import { NAR_PATH, NARINFO_PATH } from './cache-paths.ts'
import { sideFileOf, type SideFileKind } from './side-files.ts'

/** The LAN swarm's state, as JSON, for `narswarm peers`. */
export const PEERS = '/narswarm/peers'

export interface AppInit {
  substituter: Substituter
  log: Logger
  /** Advertised in nix-cache-info; lower is preferred by Nix. */
  priority: number
  storeDir: string
  /** The mapper whose contents `/narswarm/v1/…` serves to other narswarms (the first configured). */
  index?: Mapper
  /** The LAN swarm's state for `narswarm peers` (`/narswarm/peers`); absent when peers are off. */
  peers?: () => unknown
  /** Who may read `index` (default: loopback clients only). */
  indexApi?: IndexApiMode
  limits?: ServerLimits
  /** Metrics and recent activity; the status routes answer only when it is given. */
  observer?: Observer
  version?: string
  /** The upstreams' state, for the status page. */
  upstreams?: () => Array<{ name: string, onProbation: boolean }>
}

export function createApp (init: AppInit): Server {
  const { substituter, log } = init
  const indexApi = init.indexApi ?? 'local'
  const cacheInfo = Buffer.from(serializeCacheInfo({ storeDir: init.storeDir, wantMassQuery: true, priority: init.priority }))
  const observer = init.observer
  const statusSources = observer === undefined ? undefined : { observer, version: init.version ?? '', upstreams: init.upstreams ?? (() => []) }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendStatus(res, 405, { allow: 'GET, HEAD' })
      return
    }
    const path = normalizePath(req.url ?? '/')
    if (path === '/nix-cache-info') {
      sendText(res, cacheInfo, 'text/x-nix-cache-info', 'public, max-age=86400')
      return
    }
    let m = NARINFO_PATH.exec(path)
    if (m !== null) {
      const answer = await substituter.narInfo(m[1]!, { zstd: decodesZstd(req.headers['user-agent']) })
      if (answer.kind === 'found') sendText(res, answer.body, 'text/x-nix-narinfo', 'public, max-age=3600')
      else if (answer.kind === 'absent') sendStatus(res, 404)
      else {
        log.debug({ hashPart: m[1], err: answer.error.message }, 'narinfo unavailable: upstream failure')
        sendStatus(res, statusFor(answer.error))
      }
      return
    }
    m = NAR_PATH.exec(path)
    if (m !== null) {
      await serveNar(m[1]!, hashPartOf(req.url!), m[2] !== undefined, req, res)
      return
    }
    const side = sideFileOf(path)
    if (side !== undefined) {
      await serveSideFile(side, path, req, res)
      return
    }
    if (path === PEERS && init.peers !== undefined) {
      sendText(res, JSON.stringify(init.peers()), 'application/json', 'no-store')
      return
    }
    if (init.index !== undefined && indexApi !== 'off') {
      const remote = !isLoopbackAddress(req.socket.remoteAddress ?? '')
      // For a client the index is not served to, /narswarm/ is as unknown as any other path.
      if ((indexApi === 'public' || !remote) && await handleIndexRequest(path, init.index, res, { remote })) return
    }
    if (statusSources !== undefined && await handleOpsRequest(path, res, statusSources)) return
    sendStatus(res, 404)
  }

  const serveNar = async (narHash: string, hashPart: string | undefined, zstd: boolean, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const nar = await substituter.findNar(narHash, hashPart)
    if (nar === undefined) { sendStatus(res, 404); return }
    const size = nar.identity.narSize
    let range: [number, number] | undefined
    try {
      if (!zstd) range = parseRange(req.headers.range, size)
    } catch (err) {
      if (!(err instanceof RangeNotSatisfiableError)) throw err
      sendStatus(res, 416, { 'content-range': `bytes */${size}` })
      return
    }
    // A zstd stream's length and bytes depend on where it comes from: no length, no ranges.
    const headers: Record<string, string> = zstd
      ? { 'content-type': 'application/x-nix-nar', 'cache-control': 'no-store' }
      : { 'content-type': 'application/x-nix-nar', 'accept-ranges': 'bytes', etag: `"${narHash}"`, 'cache-control': 'public, max-age=31536000, immutable' }
    const length = (n: number): Record<string, string> => zstd ? {} : { 'content-length': String(n) }
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, ...length(size) })
      res.end()
      return
    }
    const abort = new AbortController()
    res.once('close', () => { if (!res.writableFinished) abort.abort(new Error('client went away')) })
    const [start, end] = range ?? [0, size]
    const opened = zstd
      ? await openZstd(nar, async () => await substituter.findNar(narHash, hashPart), log, abort.signal)
      : await nar.open(start, end, abort.signal)
    if (opened === undefined) { sendStatus(res, 404); return }
    const started = performance.now()
    const storePath = nar.identity.storePath
    try {
      if (range === undefined) res.writeHead(200, { ...headers, ...length(size) })
      else res.writeHead(206, { ...headers, ...length(end - start), 'content-range': `bytes ${start}-${end - 1}/${size}` })
      await sendBody(opened.body, res, abort.signal)
      const source = opened.source()
      const kind = substituter.sourceKind(source)
      const ms = Math.round(performance.now() - started)
      log.info({ storePath, narHash, source, kind, bytes: end - start, ms, range: req.headers.range, ...(zstd ? { compression: 'zstd' } : {}) }, 'NAR served')
      observer?.narServed({ storePath: storePath ?? narHash, source, kind, bytes: end - start, ms })
    } catch (err) {
      // Headers are gone; cutting the connection is the only way to tell Nix the body is bad.
      res.destroy()
      if (abort.signal.aborted) log.info({ storePath, narHash }, 'client closed the connection during a NAR transfer')
      else log.warn({ storePath, narHash, source: opened.source(), err: (err as Error).message }, 'NAR transfer aborted')
    } finally {
      opened.close()
    }
  }

  const serveSideFile = async (kind: SideFileKind, path: string, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const abort = new AbortController()
    res.once('close', () => { if (!res.writableFinished) abort.abort(new Error('client went away')) })
    const file = await substituter.sideFile(kind, path, abort.signal)
    if (file === undefined) { sendStatus(res, 404); return }
    // What an upstream has now it may not have later, or have anew: not cached by clients.
    res.writeHead(200, { 'content-type': kind.contentType, 'cache-control': 'no-cache' })
    if (req.method === 'HEAD') {
      await file.close()
      res.end()
      return
    }
    try {
      await sendBody(file.body, res, abort.signal)
    } catch (err) {
      res.destroy()
      if (!abort.signal.aborted) log.warn({ path, upstream: file.upstream, err: (err as Error).message }, `${kind.kind} transfer aborted`)
    }
  }

  const server = createServer((req, res) => {
    if (observer !== undefined) {
      const started = performance.now()
      res.once('close', () => observer.request(routeOf(req.url ?? '/'), res.statusCode, (performance.now() - started) / 1000))
    }
    handle(req, res).catch((err: unknown) => {
      // A client that hung up while we waited on a source is not a failure of ours.
      if (req.socket.destroyed) {
        log.debug({ url: req.url, err: (err as Error).message }, 'client closed the connection before the answer')
        return
      }
      const status = statusFor(err)
      if (status === 502 || status === 504) log.warn({ url: req.url, err: (err as Error).message }, 'request failed: no source could deliver')
      else if (status >= 500) log.error({ url: req.url, err: (err as Error).message, stack: (err as Error).stack }, 'request failed')
      else log.debug({ url: req.url, err: (err as Error).message }, 'request refused')
      if (!res.headersSent) sendStatus(res, status)
      else res.destroy()
    })
  })
  applyServerLimits(server, init.limits ?? SERVER_LIMIT_DEFAULTS, log)
  return server
}

/** The store path's hash part from a NAR URL's query (`?hash=…`), if well-formed. */
function hashPartOf (url: string): string | undefined {
  const q = url.indexOf('?')
  if (q < 0) return undefined
  const hash = new URLSearchParams(url.slice(q + 1)).get('hash')
  return hash !== null && isHashPart(hash) ? hash : undefined
}

/** The route a request path falls under, for metrics: a fixed set of labels, never the raw path. */
export function routeOf (url: string): string {
  const path = normalizePath(url)
  if (NARINFO_PATH.test(path)) return 'narinfo'
  if (NAR_PATH.test(path)) return 'nar'
  if (path === '/nix-cache-info') return 'nix-cache-info'
  if (path.startsWith('/narswarm/')) return 'index'
  if (sideFileOf(path) !== undefined) return 'side-file'
  if (OPS_ROUTES.includes(path as typeof OPS_ROUTES[number])) return path === '/' ? 'status-page' : path.slice(1)
  return 'other'
}

function normalizePath (url: string): string {
  const q = url.indexOf('?')
  const path = q < 0 ? url : url.slice(0, q)
  return path.includes('//') ? path.replace(/\/{2,}/g, '/') : path
}
