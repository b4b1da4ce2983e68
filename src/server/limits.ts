/**
 * Limits every narswarm HTTP listener applies, so that clients which connect and then dawdle, or
 * open connections by the thousand, cannot take it down. Node's own timers do the timing:
 * `headersTimeout` for the request headers and `requestTimeout` for the whole request as received
 * (headers and body; narswarm's requests have no body). Neither covers the response, so a long NAR
 * transfer to a slow client is never cut by them: that side is bounded by back-pressure and the
 * sources' stall timeouts. An idle kept-alive connection is closed after `keepAliveTimeout`.
 * Connections beyond `maxConnections`, or beyond `maxConnectionsPerClient` from one non-loopback
 * address, are closed as they arrive; those already open are not touched.
 */
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from '../log.ts'

export interface ServerLimits {
  /** Milliseconds a client has to send a request's headers. */
  headersTimeout: number
  /** Milliseconds a client has to send a whole request (not the time to answer it). */
  requestTimeout: number
  /** Milliseconds an idle kept-alive connection stays open. */
  keepAliveTimeout: number
  /** Open connections at most, over all clients. */
  maxConnections: number
  /** Open connections at most from one non-loopback client address. */
  maxConnectionsPerClient: number
}

export const SERVER_LIMIT_DEFAULTS: ServerLimits = {
  headersTimeout: 20_000,
  requestTimeout: 60_000,
  keepAliveTimeout: 60_000,
  maxConnections: 1024,
  // Nix opens up to `http-connections` (default 25) at once.
  maxConnectionsPerClient: 64
}

/** How often refusals are logged at most. */
const LOG_EVERY = 60_000

export function applyServerLimits (server: Server, limits: ServerLimits, log: Logger): void {
  server.headersTimeout = limits.headersTimeout
  server.requestTimeout = limits.requestTimeout
  server.keepAliveTimeout = limits.keepAliveTimeout
  // Node checks the two request timers on this interval (30 s by default; read when listening
  // starts, undeclared in its types): without a shorter one, a slow client would get up to 30 s
  // more than configured.
  ;(server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.min(5_000, Math.max(100, Math.floor(Math.min(limits.headersTimeout, limits.requestTimeout) / 4)))
  server.maxConnections = limits.maxConnections

  let refused = 0
  let loggedAt = -Infinity
  const refuse = (why: string, address: string | undefined): void => {
    refused++
    const now = Date.now()
    if (now - loggedAt < LOG_EVERY) return
    log.warn({ client: address, reason: why, refused }, 'connection refused: too many connections')
    loggedAt = now
    refused = 0
  }
  server.on('drop', (data?: { remoteAddress?: string }) => refuse(`more than ${limits.maxConnections} connections`, data?.remoteAddress))

  const perClient = new Map<string, number>()
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress
    if (address === undefined || isLoopbackAddress(address)) return
    const open = perClient.get(address) ?? 0
    if (open >= limits.maxConnectionsPerClient) {
      refuse(`more than ${limits.maxConnectionsPerClient} connections from one address`, address)
      socket.destroy()
      return
    }
    perClient.set(address, open + 1)
    socket.once('close', () => {
      const left = perClient.get(address)! - 1
      if (left === 0) perClient.delete(address)
      else perClient.set(address, left)
    })
  })
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback (`::ffff:127.…`), as Node reports remote addresses. */
export function isLoopbackAddress (address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.')
}
