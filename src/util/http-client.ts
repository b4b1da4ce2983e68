/**
 * What narswarm's HTTP clients (upstream caches, mirrors, indexes) share: one pooled undici
 * dispatcher per remote that follows redirects (binary caches hand NARs off to object stores and
 * CDNs) and goes through the proxy that `http_proxy`, `https_proxy` and `no_proxy` name, as Nix's
 * curl does; credentials given in a URL; the reading of undici's errors — which are timeouts, and
 * a short description for log lines — and of a small body with a size limit. LAN peers are spoken
 * to directly, never through a proxy.
 */
import { EnvHttpProxyAgent, interceptors, type Dispatcher } from 'undici'

/** The statuses by which a cache or mirror says it does not have a file, as Nix reads them. */
export const ABSENT_STATUSES: ReadonlySet<number> = new Set([404, 403, 410])

/** `connections` per origin; null: no limit. */
export function createHttpDispatcher (options: { connections: number | null, connectTimeout: number }): Dispatcher {
  return new EnvHttpProxyAgent({
    connections: options.connections,
    connect: { timeout: options.connectTimeout },
    keepAliveTimeout: 30_000
  }).compose(interceptors.redirect({ maxRedirections: 10 }))
}

/**
 * `url` without its user and password, and the `Authorization: Basic` header they make: undici
 * silently drops a URL's credentials, where Nix (curl) sends them. The header is for the URL's own
 * origin only; undici drops it on a redirect to another.
 */
export function splitCredentials (url: string): { url: string, authorization?: string } {
  const u = new URL(url)
  if (u.username === '' && u.password === '') return { url }
  const authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`
  u.username = ''
  u.password = ''
  return { url: u.toString(), authorization }
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
