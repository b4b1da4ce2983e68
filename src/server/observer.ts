/**
 * What this node did, for people and for monitoring: Prometheus metrics (prom-client) and a short
 * memory of recent transfers and failures for the status page. The server reports requests and
 * served NARs; the substituter reports narinfo lookups and verification failures; the logger's tap
 * reports every warning and error. Parts that live elsewhere (the chunk store, the LAN peers) plug
 * in a summary function, read only when someone asks, so a scrape never costs a request anything.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { LogRecord } from '../log.ts'

/** Where the bytes served to Nix came from; everything but `upstream` spared the central cache. */
export const SOURCE_KINDS = ['store', 'peer', 'backend', 'upstream'] as const
export type SourceKind = typeof SOURCE_KINDS[number]

/** cache-hit: from the local narinfo cache; fetched: from an upstream, the index or a peer. */
export const NARINFO_RESULTS = ['cache-hit', 'fetched', 'absent', 'failed'] as const
export type NarInfoResult = typeof NARINFO_RESULTS[number]

export interface StoreSummary {
  nars: number
  chunks: number
  /** Bytes of the NARs it holds, uncompressed. */
  logicalBytes: number
  /** Bytes its chunks take on disk. */
  storedBytes: number
  capacityBytes?: number
}

export interface PeerSummary {
  url: string
  id?: string
  /** How it was found: `static`, `mdns`. */
  origin?: string
  score?: number
  /** False while in cooldown after a failure. */
  healthy?: boolean
  /** NAR bytes this node received from it. */
  bytesReceived?: number
}

export interface Transfer {
  at: string
  storePath: string
  source: string
  kind: SourceKind
  bytes: number
  ms: number
}

export interface Failure {
  at: string
  what: string
  reason: string
  storePath?: string
  source?: string
}

const RECENT = 50

export class Observer {
  readonly registry = new Registry()
  readonly startedAt = Date.now()
  storeSummary: (() => StoreSummary | undefined) | undefined
  peerSummary: (() => PeerSummary[]) | undefined
  readonly #transfers: Transfer[] = []
  readonly #failures: Failure[] = []
  readonly #bytesByKind = new Map<SourceKind, number>(SOURCE_KINDS.map(k => [k, 0]))
  readonly #requests: Counter<'route' | 'status'>
  readonly #duration: Histogram<'route'>
  readonly #narBytes: Counter<'kind'>
  readonly #nars: Counter<'kind'>
  readonly #verification: Counter<'source'>
  readonly #narInfos: Counter<'result'>

  constructor () {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'narswarm_' })
    this.#requests = new Counter({ name: 'narswarm_http_requests_total', help: 'HTTP requests answered, by route and status', labelNames: ['route', 'status'], registers })
    this.#duration = new Histogram({ name: 'narswarm_http_request_duration_seconds', help: 'Time to answer a request in full (a NAR: to its last byte), by route', labelNames: ['route'], buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300], registers })
    this.#narBytes = new Counter({ name: 'narswarm_nar_bytes_served_total', help: 'NAR bytes served to Nix, by the kind of source they came from', labelNames: ['kind'], registers })
    this.#nars = new Counter({ name: 'narswarm_nars_served_total', help: 'NARs served to Nix in full, by the kind of source', labelNames: ['kind'], registers })
    this.#verification = new Counter({ name: 'narswarm_verification_failures_total', help: 'NARs whose bytes did not match the signed NarHash/NarSize, by source', labelNames: ['source'], registers })
    this.#narInfos = new Counter({ name: 'narswarm_narinfo_requests_total', help: 'narinfo requests by how they were answered (cache-hit: from the local narinfo cache)', labelNames: ['result'], registers })
    for (const kind of SOURCE_KINDS) { this.#narBytes.inc({ kind }, 0); this.#nars.inc({ kind }, 0) }
    for (const result of NARINFO_RESULTS) this.#narInfos.inc({ result }, 0)
    const store = (pick: (s: StoreSummary) => number | undefined) => function (this: Gauge) {
      const summary = observer.storeSummary?.()
      const value = summary === undefined ? undefined : pick(summary)
      if (value !== undefined) this.set(value)
    }
    const observer = this
    new Gauge({ name: 'narswarm_store_nars', help: 'NARs held in the chunk store', registers, collect: store(s => s.nars) })
    new Gauge({ name: 'narswarm_store_chunks', help: 'Chunks held in the chunk store', registers, collect: store(s => s.chunks) })
    new Gauge({ name: 'narswarm_store_logical_bytes', help: 'Uncompressed size of the NARs in the chunk store', registers, collect: store(s => s.logicalBytes) })
    new Gauge({ name: 'narswarm_store_stored_bytes', help: 'Bytes the chunk store takes on disk', registers, collect: store(s => s.storedBytes) })
    new Gauge({ name: 'narswarm_store_dedup_ratio', help: 'Logical bytes per stored byte (deduplication and compression)', registers, collect: store(s => s.storedBytes > 0 ? s.logicalBytes / s.storedBytes : undefined) })
    new Gauge({
      name: 'narswarm_peers', help: 'LAN peers known, by health', labelNames: ['healthy'], registers,
      collect () {
        const peers = observer.peerSummary?.()
        if (peers === undefined) return
        this.set({ healthy: 'true' }, peers.filter(p => p.healthy !== false).length)
        this.set({ healthy: 'false' }, peers.filter(p => p.healthy === false).length)
      }
    })
  }

  request (route: string, status: number, seconds: number): void {
    this.#requests.inc({ route, status: String(status) })
    this.#duration.observe({ route }, seconds)
  }

  /** A NAR (or a range of it) was sent to Nix in full. */
  narServed (transfer: Omit<Transfer, 'at'>): void {
    this.#narBytes.inc({ kind: transfer.kind }, transfer.bytes)
    this.#nars.inc({ kind: transfer.kind })
    this.#bytesByKind.set(transfer.kind, this.#bytesByKind.get(transfer.kind)! + transfer.bytes)
    remember(this.#transfers, { at: new Date().toISOString(), ...transfer })
  }

  verificationFailed (source: string): void {
    this.#verification.inc({ source })
  }

  narInfo (result: NarInfoResult): void {
    this.#narInfos.inc({ result })
  }

  /** The logger's tap: every warning and error becomes a recent failure with its logged reason. */
  readonly logTap = (record: LogRecord): void => {
    const reason = [record.err, record.reason, record.problems].find(v => v !== undefined)
    remember(this.#failures, {
      at: typeof record.time === 'string' ? record.time : new Date().toISOString(),
      what: record.msg ?? 'failure',
      reason: reason === undefined ? '' : typeof reason === 'string' ? reason : JSON.stringify(reason),
      ...(typeof record.storePath === 'string' ? { storePath: record.storePath } : {}),
      ...(typeof record.source === 'string' ? { source: record.source } : typeof record.upstream === 'string' ? { source: record.upstream } : {})
    })
  }

  /** Newest first. */
  recentTransfers (): Transfer[] { return [...this.#transfers].reverse() }
  recentFailures (): Failure[] { return [...this.#failures].reverse() }

  /** NAR bytes served to Nix by kind of source, since start. */
  bytesByKind (): Record<SourceKind, number> {
    return Object.fromEntries(this.#bytesByKind) as Record<SourceKind, number>
  }
}

function remember<T> (list: T[], item: T): void {
  list.push(item)
  if (list.length > RECENT) list.shift()
}
