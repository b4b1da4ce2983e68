/**
 * DNS-SD records (RFC 6763) as mDNS carries them: the records a node announces for its service,
 * and the services found in a received packet. A service is a PTR from the type to an instance,
 * an SRV from the instance to a host name and port, a TXT on the instance, and A/AAAA records on
 * the host name. The host name is the node's own (`narswarm-<node id>.local`), not the machine's:
 * namespaces and containers share one host name, and a second responder claiming the machine's
 * name next to avahi would make its records flap.
 */
import { isIPv4 } from 'node:net'
import { decodeTxt, type Announcement } from './announcement.ts'

/** A resource record in multicast-dns's shape. */
export interface ResourceRecord {
  name: string
  type: string
  ttl?: number
  data?: unknown
}

export interface DnsPacket {
  answers?: ResourceRecord[]
  additionals?: ResourceRecord[]
}

export interface ServiceAd {
  /** The service type, e.g. `_narswarm._tcp.local`. */
  type: string
  /** The instance label, unique on the link. */
  instance: string
  host: string
  port: number
  addresses: readonly string[]
  txt: readonly string[]
  /** Seconds. */
  ttl: number
}

export function serviceRecords (ad: ServiceAd): ResourceRecord[] {
  const fqdn = `${ad.instance}.${ad.type}`
  return [
    { name: ad.type, type: 'PTR', ttl: ad.ttl, data: fqdn },
    { name: fqdn, type: 'SRV', ttl: ad.ttl, data: { port: ad.port, target: ad.host } },
    { name: fqdn, type: 'TXT', ttl: ad.ttl, data: [...ad.txt] },
    { name: '_services._dns-sd._udp.local', type: 'PTR', ttl: ad.ttl, data: ad.type },
    ...ad.addresses.map(address => ({ name: ad.host, type: isIPv4(address) ? 'A' : 'AAAA', ttl: ad.ttl, data: address }))
  ]
}

/** The same records with TTL 0: the goodbye that tells browsers the service is gone. */
export function goodbyeRecords (records: readonly ResourceRecord[]): ResourceRecord[] {
  return records.map(r => ({ ...r, ttl: 0 }))
}

export type Sighting =
  | { kind: 'goodbye', fqdn: string }
  | { kind: 'service', fqdn: string, port: number, addresses: string[], announcement: Announcement | undefined }

const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase()

/**
 * The instances of service `type` in a packet: goodbyes, and complete announcements (PTR, SRV and
 * TXT present; addresses may be empty). An instance whose SRV or TXT is missing is left out: the
 * next announcement or query answer will carry it whole.
 */
export function sightingsIn (packet: DnsPacket, type: string): Sighting[] {
  const records = [...packet.answers ?? [], ...packet.additionals ?? []]
  const found: Sighting[] = []
  for (const ptr of records) {
    if (ptr.type !== 'PTR' || !same(ptr.name, type) || typeof ptr.data !== 'string') continue
    const fqdn = ptr.data
    if (ptr.ttl === 0) { found.push({ kind: 'goodbye', fqdn }); continue }
    const live = records.filter(r => r.ttl !== 0 && same(r.name, fqdn))
    const srv = live.find(r => r.type === 'SRV')?.data as { port?: unknown, target?: unknown } | undefined
    const txt = live.find(r => r.type === 'TXT')?.data
    if (typeof srv?.port !== 'number' || typeof srv.target !== 'string' || !Array.isArray(txt)) continue
    const target = srv.target
    const addresses = records
      .filter(r => (r.type === 'A' || r.type === 'AAAA') && r.ttl !== 0 && same(r.name, target) && typeof r.data === 'string')
      .map(r => r.data as string)
    found.push({ kind: 'service', fqdn, port: srv.port, addresses, announcement: decodeTxt(txt as Array<string | Uint8Array>) })
  }
  return found
}
