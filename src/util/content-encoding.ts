/**
 * HTTP `Content-Encoding` on what narswarm downloads: a transport layer beneath a narinfo's own
 * `Compression`, taken off first. Nix 2.8 asks for none, yet decodes whatever arrives (through
 * libarchive: gzip and even xz on a narinfo), and Nix's S3 store serves every narinfo that way when
 * it was written with `narinfo-compression`; undici hands bodies over as they came. So bodies from
 * upstreams, mirrors and indexes pass through `decodeContentEncoding`, which uses the bounded
 * decoders of NAR compressions: a bomb in this layer is pulled piece by piece like one in a NAR.
 * Codings apply in the order the header lists them, so they come off in reverse. An unknown coding
 * is a FormatError when the body is read, as curl refuses one in Nix ≥ 2.34 and Lix.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { FormatError } from '../errors.ts'
import { decompress } from '../nix/compression.ts'

/** Content codings and the decoder of each (`decompress` names); `x-` forms as RFC 9110 §8.4.1 allows. */
export const CONTENT_CODINGS: Readonly<Record<string, string>> = {
  gzip: 'gzip',
  'x-gzip': 'gzip',
  br: 'br',
  zstd: 'zstd',
  xz: 'xz',
  bzip2: 'bzip2',
  compress: 'compress',
  'x-compress': 'compress'
}

/** The codings a `Content-Encoding` header lists, in the order they were applied (`identity` left out). */
export function contentCodings (header: string | string[] | undefined): string[] {
  if (header === undefined) return []
  const joined = Array.isArray(header) ? header.join(',') : header
  return joined.split(',').map(c => c.trim().toLowerCase()).filter(c => c !== '' && c !== 'identity')
}

/**
 * A NAR file's response body with its codings taken off, and the file's size when the response
 * says it: Content-Length counts the transport's bytes, which are the file's only without a coding.
 */
export function decodeFileBody (headers: IncomingHttpHeaders, body: AsyncIterable<Uint8Array>, signal?: AbortSignal): { body: AsyncIterable<Uint8Array>, fileSize?: number } {
  const encoding = headers['content-encoding']
  const length = Number(headers['content-length'])
  const decoded = decodeContentEncoding(encoding, body, signal)
  return Number.isSafeInteger(length) && contentCodings(encoding).length === 0 ? { body: decoded, fileSize: length } : { body: decoded }
}

/** `body` with every coding of `header` taken off; unchanged when there is none. */
export function decodeContentEncoding (header: string | string[] | undefined, body: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncIterable<Uint8Array> {
  const codings = contentCodings(header)
  if (codings.length === 0) return body
  const unknown = codings.filter(c => CONTENT_CODINGS[c] === undefined)
  if (unknown.length > 0) return refuse(body, `unsupported Content-Encoding '${unknown.join(', ')}' (supported: ${Object.keys(CONTENT_CODINGS).join(', ')}, identity)`)
  let decoded = body
  for (const coding of codings.reverse()) decoded = layer(coding, decoded, signal)
  return decoded
}

/**
 * `source` with one coding taken off. A decoder's FormatError says which layer failed (the
 * transport's, not the narinfo's `Compression`); one that cannot run here (a program missing)
 * fails when read, as an unknown coding does.
 */
async function * layer (coding: string, source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    let decoded: AsyncIterable<Uint8Array>
    try {
      decoded = decompress(CONTENT_CODINGS[coding]!, source, signal === undefined ? {} : { signal })
    } catch (err) {
      await release(source)
      throw err
    }
    yield * decoded
  } catch (err) {
    if (!(err instanceof FormatError) || layerErrors.has(err)) throw err
    const named = new FormatError(`Content-Encoding ${coding}: ${err.message}`, { cause: err })
    layerErrors.add(named)
    throw named
  }
}

/** Errors that already name their layer: an outer layer passes them on as they are. */
const layerErrors = new WeakSet<Error>()

/** Fails when read, after letting go of `body` (an HTTP response must not stay open). */
async function * refuse (body: AsyncIterable<Uint8Array>, message: string): AsyncGenerator<Uint8Array> {
  await release(body)
  throw new FormatError(message)
}

/**
 * Ends `body`. It is started first: ending an iterator that has not begun skips its cleanup
 * (Node's stream iterators are generators that destroy their stream in a `finally`).
 */
async function release (body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const _ of body) break
}
