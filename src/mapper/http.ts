/**
 * A client of a remote index that speaks narswarm's HTTP index API, version 1 (docs/index-formats.md):
 * `GET <base>/narswarm/v1/locators/<nix32 sha256>` answers `{"locators":[…]}` (404: unknown) and
 * `GET <base>/narswarm/v1/narinfo/<hashPart>` answers the signed narinfo text. Spec:
 * `http+https://index.example/prefix` (or `http+http://`). Read-only: publishing into a shared index
 * is the index operator's business. The API is plain GETs of immutable-looking paths, so a static
 * file tree on any web server (or IPFS gateway) can serve it too.
 *
 * A miss is a 404; anything else that is not a 200 — a 5xx, a timeout, a refused connection — is an
 * UpstreamError, never a miss, so a broken index cannot make narswarm answer 404 to Nix.
 */
import { EnvHttpProxyAgent } from 'undici'
import { ConfigError, FormatError, UpstreamError } from '../errors.ts'
import type { NixHash } from '../nix/hash.ts'
import { isHashPart } from '../nix/store-path.ts'
import type { AbortOptions, Locator, Mapper, MapperPlugin } from '../types.ts'
import { isTimeout, readBody, splitCredentials } from '../util/http-client.ts'
import { decodeContentEncoding } from '../util/content-encoding.ts'
import { integer } from '../util/values.ts'
import { mapperSpec, parseLocatorsJson, timeoutOption } from './common.ts'

export interface HttpMapperInit {
  name: string
  /** `http(s)://host[:port]/prefix`, without a trailing slash. */
  base: string
  /** Milliseconds to wait for the response headers, and for each stall of the body. */
  timeout: number
  /** Most connections kept open to the index. */
  connections: number
}

/** The largest answer read from an index; a locator list or a narinfo is a few KiB. */
const MAX_BODY = 4 * 1024 * 1024

export class HttpMapper implements Mapper {
  readonly name: string
  readonly #base: URL
  readonly #agent: EnvHttpProxyAgent
  readonly #timeout: number
  readonly #authorization: string | undefined
  #closed = false

  constructor (init: HttpMapperInit) {
    this.name = init.name
    const credentials = splitCredentials(init.base)
    this.#authorization = credentials.authorization
    const base = new URL(credentials.url)
    // With its trailing slash, so that request paths resolve below it.
    this.#base = new URL(base.href.endsWith('/') ? base.href : `${base.href}/`)
    this.#timeout = init.timeout
    this.#agent = new EnvHttpProxyAgent({ connections: init.connections, connectTimeout: init.timeout, headersTimeout: init.timeout, bodyTimeout: init.timeout })
  }

  async lookup (key: NixHash, options?: AbortOptions): Promise<Locator[]> {
    options?.signal?.throwIfAborted()
    // The API keys NARs by sha256 only, which is what NarHash and every FileHash Nix writes are.
    if (key.algorithm !== 'sha256') return []
    const body = await this.#get(`narswarm/v1/locators/${key.toNix32()}`, options?.signal)
    if (body === undefined) return []
    return parseLocatorsJson(body, `index ${this.name}, the answer for ${key.toString()}`)
  }

  async narInfo (hashPart: string, options?: AbortOptions): Promise<string | undefined> {
    options?.signal?.throwIfAborted()
    // Anything but a hash part cannot name a store path, and must not reach the URL.
    if (!isHashPart(hashPart)) return undefined
    return await this.#get(`narswarm/v1/narinfo/${hashPart}`, options?.signal)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#agent.close()
  }

  /** The body of a 200 as text; undefined for a 404; UpstreamError for anything else. */
  async #get (path: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    if (this.#closed) throw new UpstreamError(this.name, 'mapper is closed')
    const url = new URL(path, this.#base)
    const headers: Record<string, string> = { accept: 'application/json, text/x-nix-narinfo' }
    if (this.#authorization !== undefined) headers.authorization = this.#authorization
    try {
      const res = await this.#agent.request({ origin: url.origin, path: url.pathname, method: 'GET', headers, signal: signal ?? null })
      if (res.statusCode === 404) {
        await res.body.dump()
        return undefined
      }
      if (res.statusCode !== 200) {
        await res.body.dump()
        throw new UpstreamError(this.name, `GET ${url.pathname} answered ${res.statusCode}`, { status: res.statusCode })
      }
      const bytes = await readBody(decodeContentEncoding(res.headers['content-encoding'], res.body, signal), MAX_BODY)
      if (bytes === undefined) throw new FormatError(`index ${this.name}: the answer to GET ${url.pathname} is larger than ${MAX_BODY} bytes`)
      return bytes.toString('utf8')
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      if (err instanceof UpstreamError || err instanceof FormatError) throw err
      const timeout = isTimeout(err)
      throw new UpstreamError(this.name, `GET ${url.pathname} failed${timeout ? ` (no answer within ${this.#timeout} ms)` : ''}: ${(err as Error).message}`, { cause: err, timeout })
    }
  }
}

const OPTIONS = ['timeout', 'connections'] as const

export const plugin: MapperPlugin<HttpMapperInit> = {
  scheme: 'http',
  summary: 'read-only client of a narswarm HTTP index (http+https://index.example/prefix)',
  parse (spec) {
    const { name, what } = mapperSpec(spec, ['http+http:', 'http+https:'], OPTIONS, `http+http:// or http+https:// (the scheme after '+' is the transport), not '${spec.protocol}'`)
    if (spec.hostname === '') throw new ConfigError(`${what}: the host is missing`)
    if (spec.hash !== '') throw new ConfigError(`${what}: a fragment ('${spec.hash}') is not allowed`)
    const timeout = timeoutOption(spec, what, 10_000)
    const connections = integer(spec.searchParams.get('connections') ?? undefined, 8, `${what}: option 'connections'`)
    if (connections < 1) throw new ConfigError(`${what}: option 'connections' must be at least 1`)
    const base = new URL(spec.href.slice('http+'.length))
    base.search = ''
    return { name, base: base.href.replace(/\/+$/, ''), timeout, connections }
  },
  async create (init) {
    return new HttpMapper(init)
  }
}
