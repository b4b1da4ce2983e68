/**
 * The `mirror` backend: two or more HTTP(S) servers holding the same tree of NARs, e.g.
 * `mirror+https://a.example/,https://b.example/?backoff=1m`. A locator is either an absolute URL
 * under one of the mirrors (`https://a.example/nar/….nar.xz`) or a relative path (`nar/….nar.xz`);
 * since mirrors are copies, both name the same path on every mirror.
 *
 * Each `open` starts at the next mirror in round-robin order, so load spreads evenly, and fails
 * over to the following ones within the same call when a mirror cannot be reached, answers 5xx or
 * times out. A mirror that fails `failures` times in a row is marked down for `backoff` and skipped
 * while any other mirror is up; after the back-off it is tried again, and one success brings it
 * back. A 404 is an answer, not a failure: the NAR is absent only when every mirror said so, and a
 * mix of 404s with failures or skipped mirrors is a failure (Nix remembers a 404 for an hour; a
 * broken mirror is not absence).
 *
 * Connections are pooled in one undici Agent; redirects are followed; connect, header and stall
 * timeouts bound every request, as for upstreams.
 */
import { request, type Dispatcher } from 'undici'
import { ConfigError, UpstreamError } from '../errors.ts'
import { redactUrl } from '../log.ts'
import { ABSENT_STATUSES, createHttpDispatcher, describeHttpError, isTimeout, splitCredentials } from '../util/http-client.ts'
import { decodeFileBody } from '../util/content-encoding.ts'
import type { AbortOptions, Backend, BackendPlugin, Components, Locator, NarSource } from '../types.ts'
import { duration, integer } from '../util/values.ts'

export interface MirrorBackendInit {
  /** Base URLs, each ending in `/`. */
  mirrors: string[]
  connectTimeout: number
  /** Milliseconds to wait for response headers. */
  timeout: number
  /** Milliseconds a body may stall before the transfer is abandoned. */
  stallTimeout: number
  /** Consecutive failures after which a mirror is marked down. */
  failures: number
  /** Milliseconds a mirror stays down before it is tried again. */
  backoff: number
  /** Connections per mirror. */
  connections: number
}

export const MIRROR_DEFAULTS: Omit<MirrorBackendInit, 'mirrors'> = {
  connectTimeout: 5_000,
  timeout: 30_000,
  stallTimeout: 60_000,
  failures: 3,
  backoff: 30_000,
  connections: 32
}

/** What `health()` reports about one mirror. */
export interface MirrorHealth {
  url: string
  up: boolean
  consecutiveFailures: number
  /** Epoch milliseconds until which the mirror is skipped, when down. */
  downUntil?: number
  requests: number
  lastError?: string
}

interface MirrorState {
  /** Without credentials: locators are matched against it. */
  url: string
  /** From the mirror's URL's user and password. */
  authorization?: string
  consecutiveFailures: number
  downUntil: number
  requests: number
  lastError?: string
}

const USER_AGENT = 'narswarm/0.1'

export class MirrorBackend implements Backend {
  readonly name: string
  readonly schemes = ['https', 'http'] as const
  readonly #init: MirrorBackendInit
  readonly #mirrors: MirrorState[]
  readonly #dispatcher: Dispatcher
  readonly #now: () => number
  #next = 0
  #closed = false

  constructor (init: MirrorBackendInit, options: { now?: () => number } = {}) {
    this.#init = init
    this.#now = options.now ?? Date.now
    this.#mirrors = init.mirrors.map(spec => ({ ...splitCredentials(spec), consecutiveFailures: 0, downUntil: 0, requests: 0 }))
    this.name = `mirror+${init.mirrors.map(m => redactUrl(m)).join(',')}`
    this.#dispatcher = createHttpDispatcher(init)
  }

  health (): MirrorHealth[] {
    const now = this.#now()
    return this.#mirrors.map(m => {
      const h: MirrorHealth = { url: redactUrl(m.url), up: m.downUntil <= now, consecutiveFailures: m.consecutiveFailures, requests: m.requests }
      if (m.downUntil > now) h.downUntil = m.downUntil
      if (m.lastError !== undefined) h.lastError = m.lastError
      return h
    })
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const signal = options.signal
    signal?.throwIfAborted()
    const path = this.#pathOf(locator.url)
    if (path === undefined) return undefined
    const errors: string[] = []
    let timeout = false
    const { tried, skipped } = this.#order()
    for (const mirror of tried) {
      const url = mirror.url + path
      mirror.requests++
      let res: Dispatcher.ResponseData
      try {
        res = await request(url, {
          method: 'GET',
          dispatcher: this.#dispatcher,
          headers: mirror.authorization === undefined ? { 'user-agent': USER_AGENT } : { 'user-agent': USER_AGENT, authorization: mirror.authorization },
          headersTimeout: this.#init.timeout,
          bodyTimeout: this.#init.stallTimeout,
          ...(signal === undefined ? {} : { signal })
        })
      } catch (err) {
        // The caller gave up: that says nothing about the mirror.
        if (signal?.aborted === true) throw signal.reason
        timeout ||= isTimeout(err)
        errors.push(this.#failed(mirror, describeHttpError(err)))
        continue
      }
      if (res.statusCode === 200) {
        this.#succeeded(mirror)
        return { ...decodeFileBody(res.headers, this.#wrapBody(mirror, res.body, path, signal), signal), compression: locator.compression }
      }
      await res.body.dump().catch(() => {})
      if (ABSENT_STATUSES.has(res.statusCode)) {
        this.#succeeded(mirror)
        continue
      }
      errors.push(this.#failed(mirror, `answered ${res.statusCode}`))
    }
    // Mirrors that are down were not asked, so they cannot vouch for absence.
    const failures = [...errors, ...skipped.map(m => `${redactUrl(m.url)}: down (${m.lastError ?? 'failing'})`)]
    if (failures.length === 0) return undefined
    throw new UpstreamError(this.name, `no mirror delivered ${path}: ${failures.join('; ')}`, { timeout })
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#dispatcher.destroy()
  }

  /**
   * The mirrors to try for one open: those that are up, starting at the round-robin cursor. A
   * mirror that is down is skipped (asking it would cost a timeout on every open), unless every
   * mirror is down: then all are tried rather than failing without a request.
   */
  #order (): { tried: MirrorState[], skipped: MirrorState[] } {
    const n = this.#mirrors.length
    const start = this.#next
    this.#next = (this.#next + 1) % n
    const now = this.#now()
    const rotated = Array.from({ length: n }, (_, i) => this.#mirrors[(start + i) % n]!)
    const up = rotated.filter(m => m.downUntil <= now)
    if (up.length === 0) return { tried: rotated, skipped: [] }
    return { tried: up, skipped: rotated.filter(m => m.downUntil > now) }
  }

  #succeeded (mirror: MirrorState): void {
    mirror.consecutiveFailures = 0
    mirror.downUntil = 0
  }

  #failed (mirror: MirrorState, reason: string): string {
    mirror.consecutiveFailures++
    mirror.lastError = reason
    if (mirror.consecutiveFailures >= this.#init.failures) mirror.downUntil = this.#now() + this.#init.backoff
    return `${redactUrl(mirror.url)}: ${reason}`
  }

  /** The path under every mirror that a locator names, or undefined when it is not under one. */
  #pathOf (url: string): string | undefined {
    if (!/^[a-z][a-z0-9+.-]*:/i.test(url)) {
      const path = url.replace(/^\/+/, '')
      return path === '' || path.split('/').includes('..') ? undefined : path
    }
    for (const m of this.#mirrors) {
      if (url.startsWith(m.url) && url.length > m.url.length) return url.slice(m.url.length)
    }
    return undefined
  }

  /** Turns body errors (reset, stall) into UpstreamErrors, counted against the mirror. */
  async * #wrapBody (mirror: MirrorState, body: AsyncIterable<Uint8Array>, path: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    try {
      yield * body
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      if ((err as Error).name === 'AbortError') throw err
      throw new UpstreamError(this.name, `reading ${path} from ${this.#failed(mirror, describeHttpError(err))}`, { cause: err, timeout: isTimeout(err) })
    }
  }
}


const OPTIONS = ['connect-timeout', 'timeout', 'stall-timeout', 'failures', 'backoff', 'connections'] as const

function parse (spec: URL): MirrorBackendInit {
  const where = 'mirror backend'
  if (!spec.protocol.startsWith('mirror+')) throw new ConfigError(`${where}: expected 'mirror+https://a/,https://b/', got '${redactUrl(spec)}'`)
  // The query belongs to the whole spec; the rest, after `mirror+`, is a comma-separated list.
  const list = spec.href.slice('mirror+'.length, spec.href.length - spec.search.length - spec.hash.length)
  if (spec.hash !== '') throw new ConfigError(`${where}: a fragment ('${spec.hash}') is not allowed`)
  const mirrors: string[] = []
  for (const item of list.split(',')) {
    let u: URL
    // The spec reached us parsed: a first mirror without a path ('https://a.example,https://…') has
    // had the next one's 'https:' read as its port, so the hint names the fix.
    try { u = new URL(item) } catch { throw new ConfigError(`${where}: '${item}' is not a URL (end each mirror with '/': mirror+https://a.example/,https://b.example/)`) }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new ConfigError(`${where}: mirror '${redactUrl(u)}' is not http:// or https://`)
    }
    if (u.search !== '' || u.hash !== '') throw new ConfigError(`${where}: mirror '${redactUrl(u)}' may not carry a query or fragment; options go at the end of the spec`)
    if (!u.pathname.endsWith('/')) u.pathname += '/'
    if (mirrors.includes(u.href)) throw new ConfigError(`${where}: mirror '${redactUrl(u)}' is listed twice`)
    mirrors.push(u.href)
  }
  if (mirrors.length < 2) {
    throw new ConfigError(`${where}: needs two or more mirrors separated by ',' (got ${mirrors.length}); for one server use it as an upstream`)
  }
  const options: Record<string, string> = {}
  for (const [key, value] of spec.searchParams) {
    if (!(OPTIONS as readonly string[]).includes(key)) throw new ConfigError(`${where}: unknown option '${key}' (known: ${OPTIONS.join(', ')})`)
    options[key] = value
  }
  const init: MirrorBackendInit = {
    mirrors,
    connectTimeout: duration(options['connect-timeout'], MIRROR_DEFAULTS.connectTimeout, `${where}: connect-timeout`),
    timeout: duration(options.timeout, MIRROR_DEFAULTS.timeout, `${where}: timeout`),
    stallTimeout: duration(options['stall-timeout'], MIRROR_DEFAULTS.stallTimeout, `${where}: stall-timeout`),
    failures: integer(options.failures, MIRROR_DEFAULTS.failures, `${where}: failures`),
    backoff: duration(options.backoff, MIRROR_DEFAULTS.backoff, `${where}: backoff`),
    connections: integer(options.connections, MIRROR_DEFAULTS.connections, `${where}: connections`)
  }
  if (init.failures < 1) throw new ConfigError(`${where}: failures must be at least 1, got ${init.failures}`)
  if (init.connections < 1) throw new ConfigError(`${where}: connections must be at least 1, got ${init.connections}`)
  for (const key of ['connectTimeout', 'timeout', 'stallTimeout'] as const) {
    if (init[key] <= 0) throw new ConfigError(`${where}: ${key === 'connectTimeout' ? 'connect-timeout' : key === 'stallTimeout' ? 'stall-timeout' : 'timeout'} must be more than 0`)
  }
  return init
}

export const plugin: BackendPlugin<MirrorBackendInit> = {
  scheme: 'mirror',
  summary: 'HTTP(S) mirrors of one NAR tree (mirror+https://a/,https://b/): round robin, failover, back-off',
  parse,
  create: async (init: MirrorBackendInit, _components: Components) => new MirrorBackend(init)
}
