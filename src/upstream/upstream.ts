/**
 * One upstream binary cache (cache.nixos.org, a `nix copy --to file://` tree behind any HTTP
 * server, another narswarm…), spoken to the way Nix speaks to it. It answers three questions:
 * what is its narinfo for a hash part (checked against this upstream's trusted keys before anyone
 * sees it), and can it stream a NAR. The answer keeps "absent" (the upstream said 404/403/410),
 * "rejected" (it answered, but with something unusable: malformed, unsigned, for another path) and
 * failure (timeout, refused, 5xx: thrown as `UpstreamError`) apart, because only the first may
 * become a 404 for Nix.
 */
import { request, type Dispatcher } from 'undici'
import { FormatError, UpstreamError } from '../errors.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { narHashOfContentAddress } from '../nix/content-address.ts'
import { decodeProblem } from '../nix/compression.ts'
import { trustedKeyMap, verifyNarInfo, type PublicKey } from '../nix/signature.ts'
import { redactUrl } from '../log.ts'
import { ABSENT_STATUSES, createHttpDispatcher, describeHttpError, isTimeout, readBody, splitCredentials } from '../util/http-client.ts'
import { decodeContentEncoding, decodeFileBody } from '../util/content-encoding.ts'
import type { UpstreamConfig } from './spec.ts'

/** The largest narinfo read (real ones are a few hundred bytes). */
const NARINFO_LIMIT = 1 << 20

export type NarInfoAnswer =
  | { kind: 'found', narInfo: NarInfo, text: string }
  | { kind: 'absent', status: number }
  | { kind: 'rejected', reason: string }

export interface NarStream {
  body: AsyncIterable<Uint8Array>
  compression: string
  /** The Content-Length the upstream announced, if any (of the compressed file). */
  fileSize?: number
}

const USER_AGENT = 'narswarm/0.1'

export class Upstream {
  readonly name: string
  readonly url: string
  readonly priority: number
  readonly requireSigs: boolean
  readonly #keys: ReadonlyMap<string, PublicKey>
  readonly #config: UpstreamConfig
  readonly #dispatcher: Dispatcher
  /** From the URL's user and password, sent to the upstream's own origin only. */
  readonly #authorization: string | undefined
  readonly #origin: string

  constructor (config: UpstreamConfig) {
    this.#config = config
    const credentials = splitCredentials(config.url)
    this.#authorization = credentials.authorization
    this.url = credentials.url.replace(/\/+$/, '')
    this.#origin = new URL(this.url).origin
    this.name = config.name ?? redactUrl(this.url).replace(/\/$/, '')
    this.priority = config.priority
    this.requireSigs = config.requireSigs
    this.#keys = trustedKeyMap(config.trustedPublicKeys)
    this.#dispatcher = createHttpDispatcher(config)
  }

  /** Resolves a narinfo `URL` field against this upstream, as Nix 2.8 does (absolute URLs verbatim). */
  resolve (relative: string): string {
    if (/^https?:\/\//.test(relative)) return relative
    return `${this.url}/${relative}`
  }

  async fetchNarInfo (hashPart: string, options: { signal?: AbortSignal } = {}): Promise<NarInfoAnswer> {
    const res = await this.#open(`${this.url}/${hashPart}.narinfo`, `${hashPart}.narinfo`, this.#config.narinfoTimeout, options.signal)
    if (typeof res === 'number') return { kind: 'absent', status: res }
    let bytes: Buffer | undefined
    try {
      // The limit applies to the narinfo itself, after any Content-Encoding came off.
      bytes = await readBody(decodeContentEncoding(res.headers['content-encoding'], res.body, options.signal), NARINFO_LIMIT)
    } catch (err) {
      // An answer, just not a usable one: absent from this upstream, like a malformed narinfo.
      if (err instanceof FormatError) return { kind: 'rejected', reason: `narinfo not readable: ${err.message}` }
      throw new UpstreamError(this.name, `reading ${hashPart}.narinfo failed: ${(err as Error).message}`, { cause: err, timeout: isTimeout(err) })
    }
    if (bytes === undefined) return { kind: 'rejected', reason: `narinfo larger than ${NARINFO_LIMIT} bytes` }
    const text = bytes.toString('utf8')
    const parsed = parseServedNarInfo(text, hashPart)
    if (parsed.kind === 'rejected') return parsed
    const narInfo = parsed.narInfo
    const trust = trustProblem(narInfo, this.requireSigs, this.#keys)
    if (trust !== undefined) return { kind: 'rejected', reason: trust }
    // A NAR this machine cannot decode cannot be verified: absent here, so that another upstream,
    // or Nix's next substituter, is asked, rather than a download that is bound to fail.
    const undecodable = decodeProblem(narInfo.compression)
    if (undecodable !== undefined) return { kind: 'rejected', reason: undecodable }
    return { kind: 'found', narInfo, text }
  }

  /** Opens the NAR a narinfo of this upstream points to; undefined when the upstream says it is gone. */
  async openNar (narInfo: NarInfo, options: { signal?: AbortSignal } = {}): Promise<NarStream | undefined> {
    const res = await this.#open(this.resolve(narInfo.url), narInfo.url, this.#config.narTimeout, options.signal)
    if (typeof res === 'number') return undefined
    return { ...decodeFileBody(res.headers, this.#wrapBody(res.body, narInfo.url), options.signal), compression: narInfo.compression }
  }

  /**
   * Another file of this cache (`path` from the root, e.g. `log/<drv>`): its body with any
   * Content-Encoding taken off, or undefined when the upstream says it has none. Throws
   * UpstreamError on any other status or when it cannot be reached.
   */
  async openFile (path: string, options: { signal?: AbortSignal } = {}): Promise<AsyncIterable<Uint8Array> | undefined> {
    const res = await this.#open(`${this.url}/${path}`, path, this.#config.narinfoTimeout, options.signal)
    if (typeof res === 'number') return undefined
    return decodeContentEncoding(res.headers['content-encoding'], this.#wrapBody(res.body, path), options.signal)
  }

  async close (): Promise<void> {
    await this.#dispatcher.close()
  }

  /**
   * A 200 response for `url` (`what` names it in errors), or the status that says the upstream
   * does not have it (ABSENT_STATUSES); throws UpstreamError for any other status.
   */
  async #open (url: string, what: string, timeout: number, signal?: AbortSignal): Promise<Dispatcher.ResponseData | number> {
    const res = await this.#get(url, timeout, signal)
    if (res.statusCode === 200) return res
    await res.body.dump()
    if (ABSENT_STATUSES.has(res.statusCode)) return res.statusCode
    throw new UpstreamError(this.name, `answered ${res.statusCode} for ${what}${hintFor(res.statusCode)}`, { status: res.statusCode })
  }

  async #get (url: string, timeout: number, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    try {
      return await request(url, {
        method: 'GET',
        dispatcher: this.#dispatcher,
        // A narinfo's URL may name another host (absolute URLs): the credentials are not for it.
        headers: this.#authorization !== undefined && new URL(url).origin === this.#origin
          ? { 'user-agent': USER_AGENT, authorization: this.#authorization }
          : { 'user-agent': USER_AGENT },
        headersTimeout: timeout,
        bodyTimeout: this.#config.stallTimeout,
        signal
      })
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      throw new UpstreamError(this.name, `GET ${redactUrl(url)} failed: ${describeHttpError(err)}`, { cause: err, timeout: isTimeout(err) })
    }
  }

  /** Turns body errors (reset, stall) into UpstreamErrors that name this upstream. */
  async * #wrapBody (body: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Uint8Array> {
    try {
      yield * body
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err
      throw new UpstreamError(this.name, `reading ${what} failed: ${describeHttpError(err)}`, { cause: err, timeout: isTimeout(err) })
    }
  }
}

/** What a user can do about a status, for the log line. */
function hintFor (status: number): string {
  if (status === 401) return ' (it wants credentials: put them in netrc-file, or in its URL, https://user:token@host)'
  if (status === 407) return ' (a proxy wants credentials: give them in http_proxy or https_proxy, http://user:password@proxy:port)'
  return ''
}

/**
 * A narinfo as a cache or an index served it for `hashPart`: parsed, about that path, and with a
 * NarHash its CA allows; else why not.
 */
export function parseServedNarInfo (text: string, hashPart: string): { kind: 'parsed', narInfo: NarInfo } | { kind: 'rejected', reason: string } {
  let narInfo: NarInfo
  try {
    narInfo = NarInfo.parse(text)
  } catch (err) {
    if (err instanceof FormatError) return { kind: 'rejected', reason: `malformed narinfo: ${err.message}` }
    throw err
  }
  if (narInfo.hashPart !== hashPart) return { kind: 'rejected', reason: `narinfo for ${hashPart} describes ${narInfo.storePath}` }
  // Signatures do not help here: an unsigned CA path passes on its CA alone, and Nix would refuse
  // every download of it after the fact.
  const fixed = narInfo.ca === undefined ? undefined : narHashOfContentAddress(narInfo.ca)
  if (fixed !== undefined && !fixed.equals(narInfo.narHash)) {
    return { kind: 'rejected', reason: `CA ${narInfo.ca} requires NarHash ${fixed.toString()}, but the narinfo says ${narInfo.narHash.toString()}` }
  }
  return { kind: 'parsed', narInfo }
}

/**
 * Why a narinfo may not be used, or undefined when it may: a valid signature from one of `keys`,
 * or a content-address claim that reproduces the store path (Nix's rule for unsigned CA paths),
 * or `require-sigs` off. For any binary cache, over HTTP or in a directory.
 */
export function trustProblem (narInfo: NarInfo, requireSigs: boolean, keys: ReadonlyMap<string, PublicKey>): string | undefined {
  if (!requireSigs) return undefined
  const result = verifyNarInfo(narInfo, keys)
  if (result.valid) return undefined
  const detail = result.problems.length > 0 ? `: ${result.problems.join('; ')}` : ''
  return narInfo.sigs.length === 0
    ? `narinfo is not signed and require-sigs is on${detail}`
    : `no valid signature by a trusted key (${[...keys.keys()].join(', ') || 'none configured'})${detail}`
}
