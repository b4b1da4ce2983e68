/**
 * The one place where an error becomes an HTTP status, and the small helpers every route uses to
 * answer. The rules follow what Nix does with each status (protocol reference §2.2, checklist §6):
 * absence is always 404 (never 400: a 400 aborts Nix), a failing upstream is 502 or 504 (Nix
 * retries those and does not cache them), and no miss or error may be cached by anyone in between
 * (`Cache-Control: no-store`). Bodies are the bare status phrase: error details go to the log,
 * not to the client.
 */
import type { ServerResponse } from 'node:http'
import { STATUS_CODES } from 'node:http'
import {
  FormatError, IntegrityError, RangeNotSatisfiableError, SignatureError, UpstreamError
} from '../errors.ts'

export function statusFor (err: unknown): number {
  if (err instanceof UpstreamError) return err.timeout ? 504 : 502
  // Bytes from a source that fail to parse or verify are that source's fault, not the client's.
  if (err instanceof IntegrityError || err instanceof FormatError || err instanceof SignatureError) return 502
  if (err instanceof RangeNotSatisfiableError) return 416
  // Everything else is our own fault: ConfigError, and StorageError where no relay without storage
  // could stand in (a chunk that cannot be read). 500, which Nix retries as transient, as it does 503.
  return 500
}

export function sendStatus (res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  const body = `${status} ${STATUS_CODES[status] ?? ''}\n`
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    ...headers
  })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}

export function sendText (res: ServerResponse, body: string | Buffer, contentType: string, cacheControl: string): void {
  res.writeHead(200, {
    'content-type': contentType,
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': cacheControl
  })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}
