/**
 * One snapshot of the node for people and probes: what `/health`, `/status.json` and the status
 * page at `/` show. Built on request from the Observer and the parts that plugged a summary in.
 */
import type { Observer, PeerSummary, SourceKind, StoreSummary, Transfer, Failure } from './observer.ts'

export interface NodeStatus {
  version: string
  startedAt: string
  uptimeSeconds: number
  /** NAR bytes served to Nix by the kind of source they came from. */
  bytesByKind: Record<SourceKind, number>
  /** Bytes the central caches did not have to send: everything served from another source. */
  upstreamBytesSpared: number
  upstreams: Array<{ name: string, onProbation: boolean }>
  store: StoreSummary | null
  peers: PeerSummary[] | null
  recentTransfers: Transfer[]
  recentFailures: Failure[]
}

export interface StatusSources {
  observer: Observer
  version: string
  upstreams: () => Array<{ name: string, onProbation: boolean }>
}

export function nodeStatus ({ observer, version, upstreams }: StatusSources): NodeStatus {
  const bytesByKind = observer.bytesByKind()
  return {
    version,
    startedAt: new Date(observer.startedAt).toISOString(),
    uptimeSeconds: Math.round((Date.now() - observer.startedAt) / 1000),
    bytesByKind,
    upstreamBytesSpared: Object.entries(bytesByKind).reduce((sum, [kind, bytes]) => kind === 'upstream' ? sum : sum + bytes, 0),
    upstreams: upstreams(),
    store: observer.storeSummary?.() ?? null,
    peers: observer.peerSummary?.() ?? null,
    recentTransfers: observer.recentTransfers(),
    recentFailures: observer.recentFailures()
  }
}

/** The small answer for `/health`: enough for a probe to tell "up and which parts are on". */
export function health (status: NodeStatus): Record<string, unknown> {
  return {
    status: 'ok',
    version: status.version,
    uptimeSeconds: status.uptimeSeconds,
    upstreams: status.upstreams,
    store: status.store === null ? null : { nars: status.store.nars, storedBytes: status.store.storedBytes },
    peers: status.peers === null ? null : status.peers.length
  }
}
