/**
 * This node as a member of the LAN swarm: the peer table (static peers, discovery), the peer
 * listener with what this node shares, the filler and narinfo fallback the substituter races, and
 * the republishing of committed NARs. `createSwarm` builds what the substituter needs before it
 * starts; `start` opens the listener and discovery once it runs; `close` stops them all.
 */
import type { ChunkStore } from '../chunk/types.ts'
import type { Logger } from '../log.ts'
import type { ServerLimits } from '../server/limits.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import type { AbortOptions, Backend, Mapper } from '../types.ts'
import type { GroupKey } from './auth.ts'
import { PeerClient } from './client.ts'
import { startDiscovery, type MdnsDiscovery } from './discovery.ts'
import { PeerFiller } from './filler.ts'
import { peerNarInfoFallback } from './narinfo-fallback.ts'
import { Republisher } from './republish.ts'
import { startPeerServer, type PeerServerStats, type RunningPeerServer } from './server.ts'
import { PeerShares } from './shares.ts'
import { PeerTable, type PeerState } from './table.ts'

export interface SwarmInit {
  store: ChunkStore
  cache: NarInfoCache
  log: Logger
  nodeId: string
  /** Keys whose signature makes a NAR shareable (and a peer's narinfo usable). */
  trustedKeys: string[]
  staticPeers: string[]
  /** Where the peer listener listens; undefined: no listener (this node only fetches). */
  listen?: { host: string, port: number } | undefined
  groupKey?: GroupKey | undefined
  uploadLimit: number
  maxRequests: number
  /** The listener's timeouts and connection limits; the defaults when undefined. */
  limits?: ServerLimits | undefined
  discovery: 'mdns' | 'off'
  discoveryInterval: number
  backends: readonly Backend[]
  /** The index that republished NARs are recorded in (the first mapper). */
  mapper?: Mapper | undefined
}

/** What `narswarm peers` shows. */
export interface SwarmStatus {
  nodeId: string
  cdcId: string
  listener: string | null
  discovery: 'mdns' | 'off'
  groupKey: boolean
  peers: PeerState[]
  uploaded: PeerServerStats | null
}

export class Swarm {
  readonly table: PeerTable
  readonly filler: PeerFiller
  readonly narInfoFallback: (hashPart: string, options?: AbortOptions) => Promise<string | undefined>
  readonly #init: SwarmInit
  readonly #client: PeerClient
  readonly #shares: PeerShares
  readonly #republisher: Republisher
  #server: RunningPeerServer | undefined
  #discovery: MdnsDiscovery | undefined

  constructor (init: SwarmInit) {
    this.#init = init
    const log = init.log.child({ component: 'peers' })
    this.#client = new PeerClient(init.groupKey === undefined ? {} : { groupKey: init.groupKey })
    this.table = new PeerTable({
      log, staticPeers: init.staticPeers, selfId: init.nodeId,
      probe: async (url, signal) => await this.#client.info(url, signal)
    })
    this.filler = new PeerFiller({ table: this.table, client: this.#client, log })
    this.narInfoFallback = peerNarInfoFallback({ table: this.table, client: this.#client, trustedKeys: init.trustedKeys, log })
    this.#shares = new PeerShares({ store: init.store, cache: init.cache, trustedKeys: init.trustedKeys, log })
    this.#republisher = new Republisher({ store: init.store, backends: init.backends, mapper: init.mapper, shares: this.#shares, log })
  }

  /** Opens the peer listener and discovery, and learns the static peers' identities. */
  async start (): Promise<void> {
    const init = this.#init
    void this.#shares.scan().catch((err: unknown) => init.log.warn({ err: (err as Error).message }, 'scan of shared NARs failed'))
    void this.table.probeAll()
    if (init.listen === undefined) {
      init.log.info('peer listener off: this node fetches from peers but serves none')
    } else {
      this.#server = await startPeerServer({
        store: init.store, shares: this.#shares, nodeId: init.nodeId, log: init.log.child({ component: 'peer-listener' }),
        uploadLimit: init.uploadLimit, maxRequests: init.maxRequests,
        ...(init.limits === undefined ? {} : { limits: init.limits }), ...(init.groupKey === undefined ? {} : { groupKey: init.groupKey })
      }, init.listen)
    }
    // Without a listener, discovery still finds peers to fetch from; it just announces nothing.
    this.#discovery = startDiscovery({
      mode: init.discovery, interval: init.discoveryInterval, nodeId: init.nodeId, listenerUrl: this.#server?.url,
      cdcId: init.store.cdcId, groupKey: init.groupKey, table: this.table, log: init.log.child({ component: 'discovery' })
    })
  }

  status (): SwarmStatus {
    return {
      nodeId: this.#init.nodeId,
      cdcId: this.#init.store.cdcId,
      listener: this.#server?.url ?? null,
      discovery: this.#discovery === undefined ? 'off' : this.#init.discovery,
      groupKey: this.#init.groupKey !== undefined,
      peers: this.table.list(),
      uploaded: this.#server === undefined ? null : { ...this.#server.stats }
    }
  }

  async close (): Promise<void> {
    await this.#discovery?.stop()
    this.table.close()
    await this.#republisher.close()
    await this.#server?.close()
    this.#shares.close()
    await this.#client.close()
  }
}
