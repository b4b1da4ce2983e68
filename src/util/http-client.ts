/**
 * What narswarm's HTTP clients (upstream caches, mirrors) share: one pooled undici dispatcher per
 * remote that follows redirects (binary caches hand NARs off to object stores and CDNs), and the
 * reading of undici's errors — which are timeouts, and a short description for log lines — and
 * of a small body with a size limit.
 */
import { Agent, interceptors, type Dispatcher } from 'undici'

/** `connections` per origin; null: no limit. */
export function createHttpDispatcher (options: { connections: number | null, connectTimeout: number }): Dispatcher {
  return new Agent({
    connections: options.connections,
    connect: { timeout: options.connectTimeout },
    keepAliveTimeout: 30_000
  }).compose(interceptors.redirect({ maxRedirections: 10 }))
}

/** True when undici gave up waiting (to connect, for headers, or for body bytes). */
export function isTimeout (err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT'
}

/** `CODE (message)` for a network error, so logs say ECONNREFUSED rather than "fetch failed". */
export function describeHttpError (err: unknown): string {
  const e = err as { code?: string, message?: string, cause?: { code?: string } }
  const code = e.code ?? e.cause?.code
  return code !== undefined ? `${code} (${e.message ?? ''})` : String(e.message ?? err)
}

/** A whole response body, or undefined once it passes `limit` bytes (the rest is left unread). */
export async function readBody (body: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer | undefined> {
  const parts: Uint8Array[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > limit) return undefined
    parts.push(chunk)
  }
  return Buffer.concat(parts)
}
