/**
 * The peer table: every LAN peer this node knows, where it came from, how well it has served, and
 * whether it may be asked now. Peers come from the configuration (`peer = ["http://host:port"]`,
 * never expiring) and from discovery, which calls `add` each time it sees a peer announce itself
 * and `remove` when the peer says goodbye; a discovered peer not seen again within its `ttl` is
 * dropped. A peer that fails (refused, timed out, sent bytes that do not match) is left alone for
 * `cooldown` (15 s, as ncro's upstream cooldown), so a dead peer costs one short timeout, not one
 * per NAR. Health probes ask each peer's `info` now and then and feed the same score.
 *
 * The score: an exponential moving average of latency (alpha 0.3, as ncro), plus a failure rate
 * that decays with successes, plus a heavy, slowly forgiven penalty for each integrity failure
 * (a wrong chunk, a manifest of another NAR). Lower cost ranks first; `score` reports it the
 * other way round (higher is better) for people.
 *
 * Loopback, link-local and unspecified addresses are not peers (mDNS answers carry them: avahi
 * announces 127.0.0.1 and fe80::…); only a static peer given explicitly may use one (tests over
 * 127.0.0.1).
 */
import { isIP } from 'node:net'
import type { Logger } from '../log.ts'

export type PeerOrigin = 'static' | 'discovered'

/** What discovery knows of a peer when it announces itself. */
export interface PeerAnnouncement {
  /** Base URL of the peer listener, e.g. `http://10.0.0.7:37516` (no path). */
  url: string
  /** The peer's node id (TXT `id`), so one node seen at several addresses, or ourselves, is recognised. */
  nodeId?: string
  /** The peer's chunker id (TXT `cdc`); a peer with another one shares only what both can read. */
  cdcId?: string
  /** How long the announcement is good for (ms); discovery calls `add` again to refresh it. */
  ttl?: number
}

/** A peer as `narswarm peers` and the fetchers see it. */
export interface PeerState {
  url: string
  origin: PeerOrigin
  nodeId?: string
  cdcId?: string
  /** Higher is better (100 for a fast peer that never failed). */
  score: number
  /** Smoothed latency of its answers (ms), undefined before the first. */
  latency?: number
  /** Time (epoch ms) until which the peer is not asked; 0 when it may be asked. */
  coolingUntil: number
  lastSeen: number
  lastError?: string
  /** What it served us and what we failed to get from it. */
  served: { nars: number, chunks: number, bytes: number, narInfos: number }
  failures: number
  integrityFailures: number
}

export interface PeerTableInit {
  log: Logger
  /** Peers from the configuration: always kept, loopback allowed. */
  staticPeers?: string[]
  /** This node's id: an announcement of ourselves is ignored. */
  selfId?: string
  cooldown?: number
  /** Lifetime of a discovered peer's announcement when discovery gives none (ms). */
  defaultTtl?: number
  /** How often every peer is probed (ms); 0 disables probing. */
  probeInterval?: number
  /** A health probe: resolves with the peer's identity, throws when it does not answer. */
  probe?: (url: string, signal: AbortSignal) => Promise<{ nodeId?: string, cdcId?: string }>
  now?: () => number
}

interface Entry extends PeerState {
  expiresAt: number
  /** Failure rate, 0..1, an EMA over requests. */
  failureRate: number
  /** Integrity penalty (ms of cost), halved every minute. */
  penalty: number
  penaltyAt: number
}

const ALPHA = 0.3

export class PeerTable {
  readonly #log: Logger
  readonly #selfId: string | undefined
  readonly #cooldown: number
  readonly #defaultTtl: number
  readonly #now: () => number
  readonly #peers = new Map<string, Entry>()
  readonly #probe: PeerTableInit['probe']
  readonly #probeTimer: NodeJS.Timeout | undefined
  readonly #probes = new AbortController()
  #closed = false

  constructor (init: PeerTableInit) {
    this.#log = init.log
    this.#selfId = init.selfId
    this.#cooldown = init.cooldown ?? 15_000
    this.#defaultTtl = init.defaultTtl ?? 120_000
    this.#now = init.now ?? Date.now
    this.#probe = init.probe
    for (const url of init.staticPeers ?? []) this.#insert(normalizePeerUrl(url), 'static', {})
    const interval = init.probeInterval ?? 30_000
    if (this.#probe !== undefined && interval > 0) {
      this.#probeTimer = setInterval(() => { void this.probeAll() }, interval).unref()
    }
  }

  /**
   * A peer announced itself (discovery). Returns false when it is not a peer: an address that is
   * loopback, link-local or unspecified, a URL that is not plain http, or ourselves.
   */
  add (peer: PeerAnnouncement): boolean {
    if (this.#closed) return false
    let url: string
    try {
      url = normalizePeerUrl(peer.url)
    } catch {
      return false
    }
    if (!isPeerHost(new URL(url).hostname)) return false
    if (peer.nodeId !== undefined && peer.nodeId === this.#selfId) return false
    const existing = this.#peers.get(url)
    const expiresAt = this.#now() + (peer.ttl ?? this.#defaultTtl)
    if (existing !== undefined) {
      if (existing.origin === 'discovered') existing.expiresAt = expiresAt
      existing.lastSeen = this.#now()
      if (peer.nodeId !== undefined) existing.nodeId = peer.nodeId
      if (peer.cdcId !== undefined) existing.cdcId = peer.cdcId
      return true
    }
    this.#insert(url, 'discovered', peer, expiresAt)
    this.#log.info({ peer: url, nodeId: peer.nodeId }, 'peer found')
    return true
  }

  /** A discovered peer left (goodbye, or discovery lost it); static peers stay. */
  remove (url: string): void {
    let key: string
    try {
      key = normalizePeerUrl(url)
    } catch {
      return
    }
    const entry = this.#peers.get(key)
    if (entry?.origin !== 'discovered') return
    this.#peers.delete(key)
    this.#log.info({ peer: key }, 'peer gone')
  }

  /** Peers that may be asked now, best first; `except` leaves some out (those already asked). */
  available (cdcId?: string, except?: ReadonlySet<string>): string[] {
    this.#expire()
    const now = this.#now()
    return [...this.#peers.values()]
      .filter(e => e.coolingUntil <= now && (except === undefined || !except.has(e.url)) &&
        (cdcId === undefined || e.cdcId === undefined || e.cdcId === cdcId))
      .sort((a, b) => this.#cost(a) - this.#cost(b))
      .map(e => e.url)
  }

  /** Every known peer, best first, for `narswarm peers`. */
  list (): PeerState[] {
    this.#expire()
    return [...this.#peers.values()].sort((a, b) => this.#cost(a) - this.#cost(b)).map(e => this.#state(e))
  }

  get (url: string): PeerState | undefined {
    const entry = this.#peers.get(url)
    return entry === undefined ? undefined : this.#state(entry)
  }

  /** The peer answered in `ms`. */
  success (url: string, ms: number): void {
    const e = this.#peers.get(url)
    if (e === undefined) return
    e.latency = e.latency === undefined ? ms : e.latency * (1 - ALPHA) + ms * ALPHA
    e.failureRate *= 1 - ALPHA
    e.lastSeen = this.#now()
  }

  /** The peer failed (refused, timed out, broke off): it cools down. */
  failure (url: string, reason: string): void {
    const e = this.#peers.get(url)
    if (e === undefined) return
    e.failures++
    e.failureRate = e.failureRate * (1 - ALPHA) + ALPHA
    e.lastError = reason
    e.coolingUntil = this.#now() + this.#cooldown
    this.#log.debug({ peer: url, reason }, 'peer failed; cooling down')
  }

  /** The peer sent bytes that are not what it claimed: cools down and ranks last for a while. */
  integrityFailure (url: string, reason: string): void {
    const e = this.#peers.get(url)
    if (e === undefined) return
    this.failure(url, reason)
    e.integrityFailures++
    e.penalty = this.#decayedPenalty(e) + 10_000
    e.penaltyAt = this.#now()
    this.#log.warn({ peer: url, reason }, 'peer sent wrong data; scored down')
  }

  /** Counts what a peer served us. */
  served (url: string, what: { nars?: number, chunks?: number, bytes?: number, narInfos?: number }): void {
    const e = this.#peers.get(url)
    if (e === undefined) return
    e.served.nars += what.nars ?? 0
    e.served.chunks += what.chunks ?? 0
    e.served.bytes += what.bytes ?? 0
    e.served.narInfos += what.narInfos ?? 0
  }

  /** Probes every peer once (also run on a timer); a probe that fails counts as a failure. */
  async probeAll (): Promise<void> {
    const probe = this.#probe
    if (probe === undefined || this.#closed) return
    this.#expire()
    await Promise.all([...this.#peers.values()].map(async e => {
      const started = performance.now()
      try {
        const identity = await probe(e.url, AbortSignal.any([this.#probes.signal, AbortSignal.timeout(2_000)]))
        if (identity.nodeId !== undefined && identity.nodeId === this.#selfId) {
          this.#peers.delete(e.url)
          this.#log.debug({ peer: e.url }, 'peer is this node itself; dropped')
          return
        }
        if (identity.nodeId !== undefined) e.nodeId = identity.nodeId
        if (identity.cdcId !== undefined) e.cdcId = identity.cdcId
        this.success(e.url, performance.now() - started)
      } catch (err) {
        if (!this.#closed) this.failure(e.url, `probe: ${(err as Error).message}`)
      }
    }))
  }

  close (): void {
    this.#closed = true
    this.#probes.abort()
    if (this.#probeTimer !== undefined) clearInterval(this.#probeTimer)
  }

  #insert (url: string, origin: PeerOrigin, peer: Partial<PeerAnnouncement>, expiresAt = Infinity): void {
    const entry: Entry = {
      url, origin, score: 0, coolingUntil: 0, lastSeen: this.#now(),
      served: { nars: 0, chunks: 0, bytes: 0, narInfos: 0 }, failures: 0, integrityFailures: 0,
      expiresAt, failureRate: 0, penalty: 0, penaltyAt: 0
    }
    if (peer.nodeId !== undefined) entry.nodeId = peer.nodeId
    if (peer.cdcId !== undefined) entry.cdcId = peer.cdcId
    this.#peers.set(url, entry)
  }

  #expire (): void {
    const now = this.#now()
    for (const [url, e] of this.#peers) {
      if (e.expiresAt <= now) {
        this.#peers.delete(url)
        this.#log.info({ peer: url }, 'peer expired')
      }
    }
  }

  #decayedPenalty (e: Entry): number {
    return e.penalty === 0 ? 0 : e.penalty * 0.5 ** ((this.#now() - e.penaltyAt) / 60_000)
  }

  /** Expected cost of asking this peer (ms-like); unknown latency counts as 50 ms. */
  #cost (e: Entry): number {
    return (e.latency ?? 50) + 1_000 * e.failureRate + this.#decayedPenalty(e)
  }

  #state (e: Entry): PeerState {
    const state: PeerState = {
      url: e.url, origin: e.origin, score: Math.round(10_000 / (100 + this.#cost(e))), coolingUntil: e.coolingUntil > this.#now() ? e.coolingUntil : 0,
      lastSeen: e.lastSeen, served: { ...e.served }, failures: e.failures, integrityFailures: e.integrityFailures
    }
    if (e.nodeId !== undefined) state.nodeId = e.nodeId
    if (e.cdcId !== undefined) state.cdcId = e.cdcId
    if (e.latency !== undefined) state.latency = Math.round(e.latency * 10) / 10
    if (e.lastError !== undefined) state.lastError = e.lastError
    return state
  }
}

/** `http://host:port` with no path, query or credentials; throws for anything else. */
export function normalizePeerUrl (url: string): string {
  const u = new URL(url)
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`a peer URL must be http(s), got '${url}'`)
  if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '' || (u.pathname !== '/' && u.pathname !== '')) {
    throw new Error(`a peer URL is scheme://host:port only, got '${url}'`)
  }
  return u.origin
}

/** False for loopback, link-local and unspecified addresses, which are never LAN peers. */
export function isPeerHost (hostname: string): boolean {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname
  if (host === 'localhost' || host.endsWith('.localhost')) return false
  const family = isIP(host)
  if (family === 4) {
    const [a, b] = host.split('.').map(Number) as [number, number]
    return !(a === 127 || a === 0 || (a === 169 && b === 254))
  }
  if (family === 6) {
    const h = host.toLowerCase()
    if (h === '::' || h === '::1') return false
    if (/^fe[89ab]/.test(h)) return false
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
    if (mapped !== null) return isPeerHost(mapped[1]!)
    return true
  }
  return true
}
