/**
 * The S3 backend: NARs as objects in an S3-compatible bucket (AWS, MinIO, Garage, Ceph RGW…).
 * Spec `s3://bucket/prefix?endpoint=…&region=…&force-path-style=…&compression=…&profile=…`;
 * locators are `s3://bucket/key`, so a locator recorded by one proxy opens in another that has
 * read access to the bucket. Published NARs go to `prefix/nar/<nix32 NarHash>.nar.<ext>`, the
 * layout of a Nix binary cache, compressed while they stream (zstd by default) and uploaded in
 * parts, so memory stays bounded whatever the NAR's size.
 *
 * Credentials come from the AWS SDK's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the
 * named `profile`), never from the spec, which ends up in logs. The SDK is imported inside
 * `create`, so a process that configures no S3 backend never loads it.
 */
import { Readable } from 'node:stream'
import type { S3Client } from '@aws-sdk/client-s3'
import { ConfigError, FormatError, IntegrityError, UpstreamError } from '../errors.ts'
import { compress, decompress, narFileName, type Compression } from '../nix/compression.ts'
import type { AbortOptions, Backend, BackendPlugin, Components, Locator, NarSource, NarUpload } from '../types.ts'
import { boolean, compression as parseCompression } from '../util/values.ts'
import { verifyNar } from '../util/verify.ts'

export interface S3Init {
  bucket: string
  /** Key prefix without leading or trailing slashes; '' for the bucket's root. */
  prefix: string
  /** Endpoint of an S3-compatible server; AWS's own when absent. */
  endpoint?: string
  /** Region; else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1. */
  region?: string
  forcePathStyle: boolean
  compression: Compression
  /** A profile in the shared AWS config files. */
  profile?: string
}

const OPTIONS = ['endpoint', 'region', 'force-path-style', 'compression', 'profile'] as const
// Bucket names as S3 allows them (3–63 lowercase letters, digits, dots and hyphens).
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/
// Parts are buffered in memory: at most QUEUE × PART bytes per upload.
const PART_SIZE = 8 * 1024 * 1024
const QUEUE_SIZE = 2

/** Parses a spec; every problem is a ConfigError naming it (and never echoing the query). */
export function parseS3 (spec: URL): S3Init {
  if (spec.protocol !== 's3:') throw new ConfigError(`s3 backend: expected an s3:// spec, got '${spec.protocol}'`)
  if (spec.username !== '' || spec.password !== '') {
    throw new ConfigError('s3 backend: credentials do not belong in the spec; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ?profile=')
  }
  const bucket = spec.hostname
  if (bucket === '') throw new ConfigError('s3 backend: the spec names no bucket (expected s3://bucket/prefix)')
  if (!BUCKET.test(bucket)) throw new ConfigError(`s3 backend: '${bucket}' is not a valid bucket name`)
  if (spec.port !== '') throw new ConfigError('s3 backend: a port belongs in ?endpoint=, not after the bucket')
  if (spec.hash !== '') throw new ConfigError('s3 backend: the spec has a #fragment, which means nothing here')
  const prefix = decodePath(spec.pathname).replace(/^\/+|\/+$/g, '')
  const seen = new Set<string>()
  for (const key of spec.searchParams.keys()) {
    if (!(OPTIONS as readonly string[]).includes(key)) throw new ConfigError(`s3 backend: unknown option '${key}' (known: ${OPTIONS.join(', ')})`)
    if (seen.has(key)) throw new ConfigError(`s3 backend: option '${key}' given twice`)
    seen.add(key)
  }
  const q = (name: typeof OPTIONS[number]): string | undefined => spec.searchParams.get(name) ?? undefined
  const init: S3Init = { bucket, prefix, forcePathStyle: false, compression: 'zstd' }
  const endpoint = q('endpoint')
  if (endpoint !== undefined) init.endpoint = parseEndpoint(endpoint)
  const region = q('region')
  if (region !== undefined) {
    if (!/^[a-z0-9-]+$/.test(region)) throw new ConfigError(`s3 backend: region must be like 'us-east-1', got '${region}'`)
    init.region = region
  }
  // A custom endpoint (MinIO, Garage, a local server) rarely has per-bucket DNS names.
  init.forcePathStyle = boolean(q('force-path-style'), init.endpoint !== undefined, 's3 backend: force-path-style')
  init.compression = parseCompression(q('compression'), init.compression, 's3 backend')
  const profile = q('profile')
  if (profile !== undefined) {
    if (profile === '') throw new ConfigError('s3 backend: profile must not be empty')
    init.profile = profile
  }
  return init
}

function decodePath (path: string): string {
  try { return decodeURIComponent(path) } catch { throw new ConfigError('s3 backend: the prefix is not valid percent-encoding') }
}

function parseEndpoint (text: string): string {
  let url: URL
  try { url = new URL(text) } catch { throw new ConfigError('s3 backend: endpoint is not a URL (expected e.g. http://127.0.0.1:9000)') }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`s3 backend: endpoint must be http:// or https://, got '${url.protocol}'`)
  if (url.username !== '' || url.password !== '') throw new ConfigError('s3 backend: the endpoint must not carry credentials')
  if (url.search !== '' || url.hash !== '') throw new ConfigError('s3 backend: the endpoint must not have a query or fragment')
  return url.toString().replace(/\/$/, '')
}

/** The bucket and key a locator names; a FormatError for anything that is not `s3://bucket/key`. */
export function parseLocator (url: string): { bucket: string, key: string } {
  let u: URL
  try { u = new URL(url) } catch { throw new FormatError(`'${url}' is not an s3 locator`) }
  let key = ''
  try { if (u.protocol === 's3:') key = decodeURIComponent(u.pathname).replace(/^\/+/, '') } catch {}
  if (!BUCKET.test(u.hostname) || key === '' || u.search !== '' || u.username !== '') throw new FormatError(`'${url}' is not an s3://bucket/key locator`)
  return { bucket: u.hostname, key }
}

export function locatorUrl (bucket: string, key: string): string {
  return `s3://${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`
}

type Sdk = typeof import('@aws-sdk/client-s3')
type Storage = typeof import('@aws-sdk/lib-storage')

interface SdkError { name?: string, message?: string, code?: string, $metadata?: { httpStatusCode?: number } }

function statusOf (err: unknown): number | undefined {
  return (err as SdkError | undefined)?.$metadata?.httpStatusCode
}

export class S3Backend implements Backend {
  readonly name: string
  readonly schemes = ['s3'] as const
  readonly #init: S3Init
  readonly #client: S3Client
  readonly #sdk: Sdk
  readonly #storage: Storage
  #closed = false

  constructor (init: S3Init, sdk: Sdk, storage: Storage, components: Components) {
    this.#init = init
    this.#sdk = sdk
    this.#storage = storage
    this.name = `s3://${init.bucket}/${init.prefix}`
    components.log.debug({ source: this.name }, 's3 backend ready')
    this.#client = new sdk.S3Client({
      region: init.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: init.forcePathStyle,
      ...(init.endpoint !== undefined ? { endpoint: init.endpoint } : {}),
      ...(init.profile !== undefined ? { profile: init.profile } : {}),
      // The SDK's default trailing CRC checksums (aws-chunked uploads) are refused by many
      // S3-compatible servers; every NAR byte is checked against the signed NarHash anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED'
    })
  }

  /** Wraps an SDK failure as an UpstreamError naming the operation, or rethrows the abort reason. */
  #fail (err: unknown, what: string, signal?: AbortSignal): never {
    if (signal?.aborted === true) throw signal.reason
    if (err instanceof IntegrityError || err instanceof FormatError) throw err
    const e = err as SdkError
    const status = statusOf(err)
    const timeout = e?.name === 'TimeoutError' || e?.code === 'ETIMEDOUT' || e?.name === 'RequestTimeout'
    const detail = [e?.name, e?.code, e?.message].filter(s => s !== undefined && s !== '').join(': ')
    throw new UpstreamError(this.name, `${what}: ${detail || String(err)}`, { cause: err, timeout, ...(status !== undefined ? { status } : {}) })
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const { signal } = options
    signal?.throwIfAborted()
    const { bucket, key } = parseLocator(locator.url)
    let response
    try {
      response = await this.#client.send(new this.#sdk.GetObjectCommand({ Bucket: bucket, Key: key }), signal !== undefined ? { abortSignal: signal } : {})
    } catch (err) {
      if (signal?.aborted !== true && statusOf(err) === 404) return undefined
      this.#fail(err, `GetObject ${locatorUrl(bucket, key)}`, signal)
    }
    const stream = response.Body as Readable | undefined
    if (stream === undefined) this.#fail(new Error('the answer has no body'), `GetObject ${locatorUrl(bucket, key)}`)
    // Delivered decompressed: the object's size tells the decoder which engine pays off, and the
    // caller gets plain NAR bytes whatever compression the bucket holds.
    const size = response.ContentLength ?? locator.fileSize
    const raw = this.#read(stream, `GetObject ${locatorUrl(bucket, key)}`, signal)
    const body = decompress(locator.compression, raw, { ...(signal !== undefined ? { signal } : {}), ...(size !== undefined ? { sizeHint: size } : {}) })
    return { body, compression: 'none' }
  }

  /** The object's bytes; aborting, or the reader stopping early, destroys the connection. */
  async * #read (stream: Readable, what: string, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
    const onAbort = (): void => { stream.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      signal?.throwIfAborted()
      for await (const chunk of stream) yield chunk as Uint8Array
      signal?.throwIfAborted()
    } catch (err) {
      this.#fail(err, what, signal)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      stream.destroy()
    }
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    const { signal } = options
    signal?.throwIfAborted()
    const { bucket, prefix, compression } = this.#init
    const key = `${prefix === '' ? '' : `${prefix}/`}${narFileName(nar.narHash, compression)}`
    const url = locatorUrl(bucket, key)
    try {
      const head = await this.#client.send(new this.#sdk.HeadObjectCommand({ Bucket: bucket, Key: key }), signal !== undefined ? { abortSignal: signal } : {})
      const locator: Locator = { url, compression }
      if (head.ContentLength !== undefined) locator.fileSize = head.ContentLength
      return locator
    } catch (err) {
      if (signal?.aborted === true || statusOf(err) !== 404) this.#fail(err, `HeadObject ${url}`, signal)
    }
    let fileSize = 0
    const counted = async function * (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      for await (const chunk of source) { fileSize += chunk.length; yield chunk }
    }
    const abort = new AbortController()
    const onAbort = (): void => { abort.abort(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
    const upload = new this.#storage.Upload({
      client: this.#client,
      params: { Bucket: bucket, Key: key, Body: Readable.from(counted(compress(compression, verifyNar(nar.body, nar, `publishing ${url}`), { signal }))), ContentType: 'application/x-nix-nar' },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
      abortController: abort
    })
    try {
      await upload.done()
    } catch (err) {
      // A wrong NarHash/NarSize surfaces from inside the upload's body stream.
      const cause = findIntegrity(err)
      if (cause !== undefined) throw cause
      this.#fail(err, `upload ${url}`, signal)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
    return { url, compression, fileSize }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#client.destroy()
  }
}

function findIntegrity (err: unknown): IntegrityError | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as Error).cause, depth++) {
    if (e instanceof IntegrityError) return e
  }
  return undefined
}

export const plugin: BackendPlugin<S3Init> = {
  scheme: 's3',
  summary: 'NARs as objects in an S3-compatible bucket (s3://bucket/prefix?endpoint=…&region=…)',
  parse: parseS3,
  async create (init, components) {
    const [sdk, storage] = await Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')])
    return new S3Backend(init, sdk, storage, components)
  }
}
