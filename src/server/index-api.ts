/**
 * The server side of narswarm's HTTP index API, version 1 (docs/index-formats.md), over any Mapper:
 * `GET /narswarm/v1/locators/<nix32 sha256>` → `{"locators":[…]}` (404 when there are none) and
 * `GET /narswarm/v1/narinfo/<hashPart>` → the narinfo text (404 when unknown). Other proxies read it
 * with the `http+http(s)://` mapper. A 404 always means "not in this index"; a mapper that fails
 * answers 502/504, so no client mistakes a broken index for an empty one.
 *
 * Who may ask is the `index-api` setting's business (app.ts): by default only loopback clients. A
 * client on another machine never sees a `file:` locator, which would only tell it where files lie
 * on this machine's disk.
 */
import type { ServerResponse } from 'node:http'
import { NixHash } from '../nix/hash.ts'
import { isHashPart } from '../nix/store-path.ts'
import type { Mapper } from '../types.ts'
import { sendStatus, sendText, statusFor } from './respond.ts'

const PREFIX = '/narswarm/'
const LOCATORS = '/narswarm/v1/locators/'
const NARINFO = '/narswarm/v1/narinfo/'

/** Who may ask the index API: loopback clients only (the default), every client, or none. */
export const INDEX_API_MODES = ['local', 'public', 'off'] as const
export type IndexApiMode = typeof INDEX_API_MODES[number]

/**
 * Answers `path` (the request path, query ignored) when it lies under `/narswarm/`; returns false
 * for any other path, leaving `res` untouched. `remote`: the client is on another machine.
 */
export async function handleIndexRequest (path: string, mapper: Mapper, res: ServerResponse, options: { remote?: boolean } = {}): Promise<boolean> {
  const q = path.indexOf('?')
  if (q >= 0) path = path.slice(0, q)
  if (!path.startsWith(PREFIX)) return false
  const method = res.req.method
  if (method !== 'GET' && method !== 'HEAD') {
    sendStatus(res, 405, { allow: 'GET, HEAD' })
    return true
  }
  // Stop asking the index once the client has gone.
  const controller = new AbortController()
  const onClose = (): void => { if (!res.writableFinished) controller.abort() }
  res.once('close', onClose)
  try {
    if (path.startsWith(LOCATORS)) {
      const key = path.slice(LOCATORS.length)
      const narHash = NixHash.fromNix32('sha256', key)
      if (narHash === undefined) { sendStatus(res, 404); return true }
      let locators = await mapper.lookup(narHash, { signal: controller.signal })
      if (options.remote === true) locators = locators.filter(l => !l.url.startsWith('file:'))
      if (locators.length === 0) { sendStatus(res, 404); return true }
      // Locators accumulate over time, so an answer may be cached only briefly.
      sendText(res, `${JSON.stringify({ locators })}\n`, 'application/json', 'max-age=60')
      return true
    }
    if (path.startsWith(NARINFO)) {
      const hashPart = path.slice(NARINFO.length)
      if (!isHashPart(hashPart) || mapper.narInfo === undefined) { sendStatus(res, 404); return true }
      const text = await mapper.narInfo(hashPart, { signal: controller.signal })
      if (text === undefined) { sendStatus(res, 404); return true }
      sendText(res, text, 'text/x-nix-narinfo', 'max-age=3600')
      return true
    }
    sendStatus(res, 404)
    return true
  } catch (err) {
    if (controller.signal.aborted) { res.destroy(); return true }
    if (!res.headersSent) sendStatus(res, statusFor(err))
    else res.destroy()
    return true
  } finally {
    res.off('close', onClose)
  }
}
