/**
 * LAN discovery: DNS-SD over mDNS (`_narswarm._tcp`), through bonjour-service's responder. A node
 * announces its peer listener every `interval` (and answers queries at any time; without a group
 * key also as `_nix-serve._tcp`, the binary cache it serves too), browses for the
 * same service, and reports peers as they come and go: `found` when a node is first seen, `gone`
 * when it said goodbye or missed three announcements in a row (and both when its addresses or TXT
 * record changed); `feedPeerTable` passes them on to the peer table. Only the service and its
 * TXT record go out on the LAN (announcement.ts); which NARs a node holds is never broadcast,
 * peers are asked by unicast. docs/discovery.md describes it for users.
 *
 * mDNS is unauthenticated: an announcement is a hint where a peer listener might be, never trust.
 * Everything a peer sends is verified, and with a group key every request is authenticated.
 */
import { EventEmitter } from 'node:events'
import type { RemoteInfo } from 'node:dgram'
// The responder, not bonjour-service's public Bonjour class (which keeps it private): `publish`
// announces A/AAAA records of every interface (here only the addresses the listener serves) and
// re-announces at 1 s, 3 s, 9 s… then stops (here every `interval`, which expiry counts on).
// bonjour-service 1.4.4 is pinned exactly for this path; the package has no exports map.
import { Server as BonjourServer } from 'bonjour-service/dist/lib/mdns-server.js'
import type { Logger } from '../log.ts'
import type { PeerTable } from './table.ts'
import { dialOrder, peerUrl, servedAddresses } from './addresses.ts'
import { encodeTxt, MDNS_SERVICE_TYPE, NIX_SERVE_SERVICE_TYPE, refusal } from './announcement.ts'
import { PROTOCOL_VERSION } from './protocol.ts'
import { goodbyeRecords, serviceRecords, sightingsIn, type DnsPacket, type ResourceRecord } from './dns-sd.ts'

export interface DiscoveredPeer {
  nodeId: string
  /** Base URLs of its peer listener, best first (IPv4 first, the address it announced from first). */
  urls: string[]
  cdcId: string
  version: string
}

/** The part of bonjour-service's responder used here (its multicast-dns socket and record registry). */
export interface MdnsResponder {
  mdns: {
    on: (event: string, listener: (...args: any[]) => void) => unknown
    removeListener: (event: string, listener: (...args: any[]) => void) => unknown
    respond: (packet: DnsPacket, callback?: (err?: Error | null) => void) => void
    query: (name: string, type: string, callback?: (err?: Error | null) => void) => void
    destroy: (callback?: () => void) => void
  }
  register: (records: ResourceRecord[]) => void
  unregister: (records: ResourceRecord[]) => void
}

export interface DiscoveryOptions {
  nodeId: string
  /**
   * Where the peer listener is bound: its port and host (`0.0.0.0`, `::` or one address).
   * Undefined: nothing is announced, peers are only browsed for (a node that fetches but serves none).
   */
  listener: { host: string, port: number } | undefined
  cdcId: string
  /** The group key's tag function (announcement.ts `groupTag`); undefined without a group key. */
  groupTag?: ((nodeId: string) => string) | undefined
  /** Milliseconds between announcements; a peer silent for 3 of them (and a half) is gone. */
  interval: number
  log: Logger
  /** For tests: another responder than a multicast socket on port 5353. */
  responder?: () => MdnsResponder
  /** For tests: the clock. */
  now?: () => number
}

interface Entry { peer: DiscoveredPeer, fqdn: string, lastSeen: number }

/** Discovered peers kept at most (a LAN with more narswarm nodes still works: 256 is plenty to fetch from). */
const MAX_PEERS = 256

export class MdnsDiscovery extends EventEmitter<{ found: [DiscoveredPeer], gone: [DiscoveredPeer, string] }> {
  readonly #options: DiscoveryOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #peers = new Map<string, Entry>()
  /** Refusals already logged, so a stranger announcing every few seconds is logged once. */
  readonly #refused = new Set<string>()
  #responder: MdnsResponder | undefined
  #records: ResourceRecord[] = []
  #timers = new Set<NodeJS.Timeout>()
  #stopping: Promise<void> | undefined

  constructor (options: DiscoveryOptions) {
    super()
    this.#options = options
    this.#log = options.log
    this.#now = options.now ?? Date.now
  }

  /** The peers currently known. */
  get peers (): DiscoveredPeer[] {
    return [...this.#peers.values()].map(e => e.peer)
  }

  start (): void {
    if (this.#responder !== undefined || this.#stopping !== undefined) return
    // No `interface` option: multicast-dns would bind the socket to that unicast address, and a
    // socket bound so receives no multicast at all (nothing was found that way between namespaces).
    // Without it, it joins the group on every interface and sends by the multicast route.
    const responder = this.#responder = this.#options.responder?.() ??
      new BonjourServer({}, (err: Error) => this.#log.warn({ err }, 'mDNS answer failed')) as unknown as MdnsResponder
    responder.mdns.on('error', this.#onError)
    responder.mdns.on('warning', this.#onWarning)
    responder.mdns.on('response', this.#onResponse)
    this.#announce()
    responder.mdns.query(MDNS_SERVICE_TYPE, 'PTR', this.#sent)
    // RFC 6762 §8.3: a second announcement a second later, in case the first was lost.
    this.#after(1000, () => this.#announce())
    const tick = (): void => {
      this.#announce()
      this.#expire()
      // ±10 % jitter, so nodes started together do not announce in lockstep forever.
      this.#after(this.#options.interval * (0.9 + Math.random() * 0.2), tick)
    }
    this.#after(this.#options.interval, tick)
    const sweep = (): void => { this.#expire(); this.#after(this.#options.interval / 2, sweep) }
    this.#after(this.#options.interval / 2, sweep)
    const listener = this.#options.listener
    this.#log.info({ nodeId: this.#options.nodeId, announced: listener === undefined ? null : { port: listener.port, addresses: servedAddresses(listener.host) } }, 'mDNS discovery started')
  }

  /** Says goodbye on the LAN, closes the socket and cancels every timer. Idempotent. */
  async stop (): Promise<void> {
    this.#stopping ??= (async () => {
      for (const t of this.#timers) clearTimeout(t)
      this.#timers.clear()
      const responder = this.#responder
      if (responder === undefined) return
      responder.mdns.removeListener('response', this.#onResponse)
      if (this.#records.length > 0) {
        const goodbye = goodbyeRecords(this.#records)
        responder.unregister(this.#records)
        await new Promise<void>(resolve => {
          const timeout = setTimeout(resolve, 1000)
          responder.mdns.respond({ answers: goodbye }, () => { clearTimeout(timeout); resolve() })
        })
      }
      await new Promise<void>(resolve => responder.mdns.destroy(() => resolve()))
      this.#peers.clear()
      this.#log.info('mDNS discovery stopped')
    })()
    return await this.#stopping
  }

  #after (ms: number, fn: () => void): void {
    const timer = setTimeout(() => { this.#timers.delete(timer); fn() }, ms)
    this.#timers.add(timer)
  }

  /** Announces (with the current addresses: an interface may have come up since). */
  #announce (): void {
    const responder = this.#responder
    const listener = this.#options.listener
    if (responder === undefined || listener === undefined || this.#stopping !== undefined) return
    const { nodeId, cdcId, groupTag, interval } = this.#options
    const common = { host: `narswarm-${nodeId}.local`, port: listener.port, addresses: servedAddresses(listener.host), ttl: Math.max(1, Math.ceil(3 * interval / 1000)) }
    const records = serviceRecords({
      ...common,
      type: MDNS_SERVICE_TYPE,
      instance: nodeId,
      txt: encodeTxt({ version: String(PROTOCOL_VERSION), nodeId, cdcId, group: groupTag?.(nodeId) })
    })
    // Without a group key the listener is also a plain binary cache of what it shares (lan-cache.ts),
    // which ncro and the like find as _nix-serve._tcp. The address records are already there.
    if (groupTag === undefined) {
      records.push(...serviceRecords({ ...common, type: NIX_SERVE_SERVICE_TYPE, instance: `narswarm-${nodeId}`, txt: [''] }).filter(r => r.type !== 'A' && r.type !== 'AAAA'))
    }
    if (JSON.stringify(records) !== JSON.stringify(this.#records)) {
      responder.unregister(this.#records)
      responder.register(records)
      this.#records = records
    }
    responder.mdns.respond({ answers: records }, this.#sent)
  }

  readonly #sent = (err?: Error | null): void => {
    if (err != null) this.#log.debug({ err }, 'mDNS packet not sent')
  }

  readonly #onError = (err: Error): void => {
    this.#log.warn({ err }, 'mDNS socket failed; LAN discovery is off until restart (static peers still work)')
  }

  readonly #onWarning = (err: Error): void => {
    this.#log.debug({ err }, 'mDNS warning')
  }

  readonly #onResponse = (packet: DnsPacket, rinfo?: RemoteInfo): void => {
    for (const sighting of sightingsIn(packet, MDNS_SERVICE_TYPE)) {
      if (sighting.kind === 'goodbye') {
        for (const [nodeId, entry] of this.#peers) if (entry.fqdn.toLowerCase() === sighting.fqdn.toLowerCase()) this.#drop(nodeId, 'goodbye')
        continue
      }
      const a = sighting.announcement
      if (a === undefined) { this.#refuse(sighting.fqdn, 'malformed TXT record'); continue }
      const why = refusal(a, this.#options)
      if (why !== undefined) { if (why !== 'ourselves') this.#refuse(a.nodeId, why); continue }
      const urls = dialOrder(sighting.addresses, rinfo?.address).map(address => peerUrl(address, sighting.port))
      if (urls.length === 0) { this.#refuse(a.nodeId, 'no dialable address'); continue }
      // Anyone can announce anything: a flood of made-up nodes must not grow the table without bound.
      if (!this.#peers.has(a.nodeId) && this.#peers.size >= MAX_PEERS) { this.#refuse(a.nodeId, `more than ${MAX_PEERS} peers`); continue }
      this.#seen({ nodeId: a.nodeId, urls, cdcId: a.cdcId, version: a.version }, sighting.fqdn)
    }
  }

  #seen (peer: DiscoveredPeer, fqdn: string): void {
    const known = this.#peers.get(peer.nodeId)
    this.#peers.set(peer.nodeId, { peer, fqdn, lastSeen: this.#now() })
    if (known !== undefined && JSON.stringify(known.peer) === JSON.stringify(peer)) return
    // A peer whose addresses or TXT record changed is replaced: gone at the old, found at the new.
    if (known !== undefined) this.emit('gone', known.peer, 'changed')
    this.#log.debug({ peer: peer.nodeId, urls: peer.urls, cdcId: peer.cdcId }, 'mDNS: peer announced')
    this.emit('found', peer)
  }

  /** Turns an announcement down; a known peer that now announces something unacceptable is dropped. */
  #refuse (who: string, why: string): void {
    this.#drop(who, why)
    const key = `${who} ${why}`
    if (this.#refused.has(key)) return
    if (this.#refused.size > 1000) this.#refused.clear()
    this.#refused.add(key)
    this.#log.debug({ peer: who, reason: why }, 'announcement ignored')
  }

  #expire (): void {
    const limit = this.#now() - 3.5 * this.#options.interval
    for (const [nodeId, entry] of this.#peers) if (entry.lastSeen < limit) this.#drop(nodeId, 'expired')
  }

  #drop (nodeId: string, reason: string): void {
    const entry = this.#peers.get(nodeId)
    if (entry === undefined) return
    this.#peers.delete(nodeId)
    this.#log.debug({ peer: nodeId, reason }, 'mDNS: peer left')
    this.emit('gone', entry.peer, reason)
  }
}

/**
 * Keeps the peer table in step with discovery: each found peer is added at its best address (the
 * table keeps one URL a peer; discovery, not the table, decides when a peer is gone).
 */
export function feedPeerTable (discovery: MdnsDiscovery, table: Pick<PeerTable, 'add' | 'remove'>): void {
  discovery.on('found', peer => { table.add({ url: peer.urls[0]!, nodeId: peer.nodeId, cdcId: peer.cdcId, ttl: Infinity }) })
  discovery.on('gone', peer => { table.remove(peer.urls[0]!) })
}

/**
 * Starts discovery for the peer listener at `listenerUrl` (its real address, e.g.
 * `http://0.0.0.0:37516`; undefined without a listener: then peers are found but this node is not
 * announced) and feeds `table`; undefined when the `discovery` setting is `off`.
 */
export function startDiscovery (init: {
  mode: 'mdns' | 'off'
  interval: number
  nodeId: string
  listenerUrl?: string | undefined
  cdcId: string
  groupKey?: { tag: (nodeId: string) => string } | undefined
  table: Pick<PeerTable, 'add' | 'remove'>
  log: Logger
}): MdnsDiscovery | undefined {
  if (init.mode === 'off') return undefined
  const url = init.listenerUrl === undefined ? undefined : new URL(init.listenerUrl)
  const discovery = new MdnsDiscovery({
    nodeId: init.nodeId,
    listener: url === undefined ? undefined : { port: Number(url.port), host: url.hostname.replace(/^\[(.*)\]$/, '$1') },
    cdcId: init.cdcId,
    groupTag: init.groupKey === undefined ? undefined : id => init.groupKey!.tag(id),
    interval: init.interval,
    log: init.log
  })
  feedPeerTable(discovery, init.table)
  discovery.start()
  return discovery
}
