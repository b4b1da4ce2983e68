/**
 * The substituter's HTTP server: the binary-cache protocol as Nix and Lix speak it.
 *
 *   GET|HEAD /nix-cache-info              StoreDir, WantMassQuery, Priority
 *   GET|HEAD /<32-char hash>.narinfo       narinfo, rewritten to point at our NAR URL
 *   GET|HEAD /nar/<52-char narHash>.nar    the NAR, uncompressed and verified; Range: bytes=N-
 *   GET|HEAD /narswarm/v1/…                this narswarm's index, for other narswarms' http+ mappers
 *   GET|HEAD / /health /status.json /metrics   for people and monitoring (ops-routes.ts)
 *
 * Everything else is 404, including malformed hashes (a 400 would abort Nix). Paths are matched
 * after dropping the query string and collapsing `//` (Nix 2.8 produces `//nar/…` for absolute-path
 * URLs). Methods other than GET and HEAD get 405: Nix tries `PUT /nix-cache-info` only when that
 * file is missing, which never happens here.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { RangeNotSatisfiableError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { serializeCacheInfo } from '../nix/cache-info.ts'
import { parseRange } from './range.ts'
import { sendStatus, sendText, statusFor } from './respond.ts'
import { sliceBytes } from '../util/verify.ts'
import type { Substituter } from './substituter.ts'
import { handleIndexRequest } from './index-api.ts'
import type { Mapper } from '../types.ts'
import type { Observer } from './observer.ts'
import { handleOpsRequest, OPS_ROUTES } from './ops-routes.ts'

const NARINFO = /^\/([0-9a-df-np-sv-z]{32})\.narinfo$/
const NAR = /^\/nar\/([0-9a-df-np-sv-z]{52})\.nar$/

export interface AppInit {
  substituter: Substituter
  log: Logger
  /** Advertised in nix-cache-info; lower is preferred by Nix. */
  priority: number
  storeDir: string
  /** The mapper whose contents `/narswarm/v1/…` serves to other narswarms (the first configured). */
  index?: Mapper
  /** Metrics and recent activity; the status routes answer only when it is given. */
  observer?: Observer
  version?: string
  /** The upstreams' state, for the status page. */
  upstreams?: () => Array<{ name: string, onProbation: boolean }>
}

export function createApp (init: AppInit): Server {
  const { substituter, log } = init
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
    let m = NARINFO.exec(path)
    if (m !== null) {
      const answer = await substituter.narInfo(m[1]!)
      if (answer.kind === 'found') sendText(res, answer.body, 'text/x-nix-narinfo', 'public, max-age=3600')
      else if (answer.kind === 'absent') sendStatus(res, 404)
      else {
        log.debug({ hashPart: m[1], err: answer.error.message }, 'narinfo unavailable: upstream failure')
        sendStatus(res, statusFor(answer.error))
      }
      return
    }
    m = NAR.exec(path)
    if (m !== null) {
      await serveNar(m[1]!, req, res)
      return
    }
    if (init.index !== undefined && await handleIndexRequest(path, init.index, res)) return
    if (statusSources !== undefined && await handleOpsRequest(path, res, statusSources)) return
    sendStatus(res, 404)
  }

  const serveNar = async (narHash: string, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const nar = substituter.findNar(narHash)
    if (nar === undefined) { sendStatus(res, 404); return }
    const size = nar.narInfo.narSize
    let range: [number, number] | undefined
    try {
      range = parseRange(req.headers.range, size)
    } catch (err) {
      if (!(err instanceof RangeNotSatisfiableError)) throw err
      sendStatus(res, 416, { 'content-range': `bytes */${size}` })
      return
    }
    const headers: Record<string, string> = {
      'content-type': 'application/x-nix-nar',
      'accept-ranges': 'bytes',
      etag: `"${narHash}"`,
      'cache-control': 'public, max-age=31536000, immutable'
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'content-length': String(size) })
      res.end()
      return
    }
    const abort = new AbortController()
    res.once('close', () => { if (!res.writableFinished) abort.abort(new Error('client went away')) })
    const opened = await nar.open(abort.signal)
    if (opened === undefined) { sendStatus(res, 404); return }
    const started = performance.now()
    let body = opened.body
    if (range === undefined) {
      res.writeHead(200, { ...headers, 'content-length': String(size) })
    } else {
      const [start, end] = range
      res.writeHead(206, { ...headers, 'content-length': String(end - start), 'content-range': `bytes ${start}-${end - 1}/${size}` })
      body = sliceBytes(body, start, end)
    }
    try {
      await send(body, res, abort.signal)
      const ms = Math.round(performance.now() - started)
      const bytes = range === undefined ? size : range[1] - range[0]
      log.info({ storePath: opened.narInfo.storePath, source: opened.source, kind: opened.kind, bytes, ms, range: req.headers.range }, 'NAR served')
      observer?.narServed({ storePath: opened.narInfo.storePath, source: opened.source, kind: opened.kind, bytes, ms })
    } catch (err) {
      // Headers are gone; cutting the connection is the only way to tell Nix the body is bad.
      res.destroy()
      if (abort.signal.aborted) log.info({ storePath: opened.narInfo.storePath }, 'client closed the connection during a NAR transfer')
      else log.warn({ storePath: opened.narInfo.storePath, source: opened.source, err: (err as Error).message }, 'NAR transfer aborted')
    }
  }

  const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
    if (observer !== undefined) {
      const started = performance.now()
      res.once('close', () => observer.request(routeOf(req.url ?? '/'), res.statusCode, (performance.now() - started) / 1000))
    }
    handle(req, res).catch((err: unknown) => {
      const status = statusFor(err)
      if (status === 502 || status === 504) log.warn({ url: req.url, err: (err as Error).message }, 'request failed: no source could deliver')
      else if (status >= 500) log.error({ url: req.url, err: (err as Error).message, stack: (err as Error).stack }, 'request failed')
      else log.debug({ url: req.url, err: (err as Error).message }, 'request refused')
      if (!res.headersSent) sendStatus(res, status)
      else res.destroy()
    })
  })
  return server
}

/**
 * Writes a verified stream to the client. Sources deliver 64 KiB chunks; writing them in batches
 * of up to `WRITE_BATCH` bytes saves most of the per-write cost on the one core that also receives
 * and hashes. Waits for 'drain', so a slow client slows the source (back-pressure) instead of
 * filling memory.
 */
async function send (body: AsyncIterable<Uint8Array>, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const batch: Uint8Array[] = []
  let size = 0
  const flush = async (): Promise<void> => {
    const ok = res.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size))
    batch.length = 0
    size = 0
    if (!ok) await once(res, 'drain', { signal })
  }
  for await (const chunk of body) {
    batch.push(chunk)
    size += chunk.length
    if (size >= WRITE_BATCH) await flush()
  }
  if (size > 0) await flush()
  await new Promise<void>((resolve, reject) => {
    res.end(() => resolve())
    res.once('error', reject)
  })
}

const WRITE_BATCH = 512 * 1024

/** The route a request path falls under, for metrics: a fixed set of labels, never the raw path. */
export function routeOf (url: string): string {
  const path = normalizePath(url)
  if (NARINFO.test(path)) return 'narinfo'
  if (NAR.test(path)) return 'nar'
  if (path === '/nix-cache-info') return 'nix-cache-info'
  if (path.startsWith('/narswarm/')) return 'index'
  if (OPS_ROUTES.includes(path as typeof OPS_ROUTES[number])) return path === '/' ? 'status-page' : path.slice(1)
  return 'other'
}

function normalizePath (url: string): string {
  const q = url.indexOf('?')
  const path = q < 0 ? url : url.slice(0, q)
  return path.includes('//') ? path.replace(/\/{2,}/g, '/') : path
}
