import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import type { NetworkInterfaceInfo } from 'node:os'
import { dialOrder, peerUrl, servedAddresses } from '../../src/peer/addresses.ts'
import { decodeTxt, encodeTxt, groupTag, MDNS_SERVICE_TYPE, NIX_SERVE_SERVICE_TYPE, refusal } from '../../src/peer/announcement.ts'
import { feedPeerTable, MdnsDiscovery, type DiscoveredPeer, type MdnsResponder } from '../../src/peer/discovery.ts'
import { goodbyeRecords, serviceRecords, sightingsIn, type DnsPacket, type ResourceRecord } from '../../src/peer/dns-sd.ts'
import { PeerTable } from '../../src/peer/table.ts'
import { silentLogger } from '../../src/log.ts'

const CDC = 'fcdc32-v1/16384/65536/262144'
const ME = 'a'.repeat(32)
const OTHER = 'b'.repeat(32)

function iface (address: string, family: 'IPv4' | 'IPv6', internal = false): NetworkInterfaceInfo {
  return { address, family, internal, netmask: '', mac: '02:00:00:00:00:01', cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) } as NetworkInterfaceInfo
}

describe('addresses', () => {
  const interfaces = {
    lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)],
    eth0: [iface('192.168.1.20', 'IPv4'), iface('fe80::1', 'IPv6'), iface('2001:db8::20', 'IPv6')],
    eth1: [iface('169.254.3.4', 'IPv4'), iface('10.0.0.20', 'IPv4')]
  }

  it('announces only what the listener serves, and nothing a peer cannot dial', () => {
    assert.deepEqual(servedAddresses('0.0.0.0', interfaces), ['192.168.1.20', '10.0.0.20'])
    assert.deepEqual(servedAddresses('::', interfaces), ['192.168.1.20', '2001:db8::20', '10.0.0.20'])
    assert.deepEqual(servedAddresses('10.0.0.20', interfaces), ['10.0.0.20'])
    assert.deepEqual(servedAddresses('127.0.0.1', interfaces), [])
    assert.deepEqual(servedAddresses('192.168.9.9', interfaces), [], 'an address this host does not have')
  })

  it('dials IPv4 first, the address the announcement came from first, never loopback or link-local', () => {
    const announced = ['fe80::1', '2001:db8::20', '127.0.0.1', '::1', '169.254.3.4', '0.0.0.0', '192.168.1.20', '10.0.0.20', '10.0.0.20']
    assert.deepEqual(dialOrder(announced, '10.0.0.20'), ['10.0.0.20', '192.168.1.20', '2001:db8::20'])
    assert.deepEqual(dialOrder(announced), ['192.168.1.20', '10.0.0.20', '2001:db8::20'])
    assert.deepEqual(dialOrder(['fe80::1', '127.0.0.1', 'not-an-ip']), [])
    assert.equal(peerUrl('2001:db8::20', 37516), 'http://[2001:db8::20]:37516')
    assert.equal(peerUrl('10.0.0.20', 37516), 'http://10.0.0.20:37516')
  })
})

describe('announcement', () => {
  it('round-trips through TXT strings and bytes', () => {
    const txt = encodeTxt({ version: '1', nodeId: OTHER, cdcId: CDC, group: 'ab12' })
    assert.deepEqual(decodeTxt(txt), { version: '1', nodeId: OTHER, cdcId: CDC, group: 'ab12' })
    assert.deepEqual(decodeTxt(txt.map(s => Buffer.from(s))), { version: '1', nodeId: OTHER, cdcId: CDC, group: 'ab12' })
    assert.equal(decodeTxt(['v=1', `cdc=${CDC}`]), undefined, 'no id')
    assert.equal(decodeTxt(['v=1', 'id=../../etc', `cdc=${CDC}`]), undefined, 'a malformed id')
    assert.equal(decodeTxt(['v=1', `id=${OTHER}`, `id=${ME}`, `cdc=${CDC}`])?.nodeId, OTHER, 'the first of a repeated key wins')
  })

  it('takes only nodes of the same protocol version and group, never ourselves', () => {
    const own = { nodeId: ME }
    const peer = { version: '1', nodeId: OTHER, cdcId: CDC }
    assert.equal(refusal(peer, own), undefined)
    assert.equal(refusal({ ...peer, cdcId: 'other-chunker' }, own), undefined, 'a node with another chunker is still a peer (the table decides what to ask it)')
    assert.match(refusal({ ...peer, nodeId: ME }, own)!, /ourselves/)
    assert.match(refusal({ ...peer, version: '2' }, own)!, /protocol version 2/)
    const key = 'group secret'
    assert.match(refusal({ ...peer, group: groupTag(key, OTHER) }, own)!, /we have no group key/)
    const member = { ...own, groupTag: (id: string) => groupTag(key, id) }
    assert.match(refusal(peer, member)!, /not in a group/)
    assert.equal(refusal({ ...peer, group: groupTag(key, OTHER) }, member), undefined)
    assert.match(refusal({ ...peer, group: groupTag('another secret', OTHER) }, member)!, /another group/)
    assert.match(refusal({ ...peer, group: groupTag(key, ME) }, member)!, /another group/, "a tag copied from another node's record")
    assert.notEqual(groupTag(key, OTHER), groupTag(key, ME), 'members of one group do not share a visible tag')
  })
})

function ad (nodeId: string, addresses: string[], extra: { port?: number, version?: string, group?: string } = {}): ResourceRecord[] {
  return serviceRecords({
    type: MDNS_SERVICE_TYPE,
    instance: nodeId,
    host: `narswarm-${nodeId}.local`,
    port: extra.port ?? 37516,
    addresses,
    txt: encodeTxt({ version: extra.version ?? '1', nodeId, cdcId: CDC, ...(extra.group === undefined ? {} : { group: extra.group }) }),
    ttl: 30
  })
}

describe('DNS-SD records', () => {
  it('reads back the services it announces, split over answers and additionals as responders send them', () => {
    const records = ad(OTHER, ['10.1.2.3', 'fe80::3'])
    const packet = { answers: records.slice(0, 1), additionals: records.slice(1).map(r => r.type === 'TXT' ? { ...r, data: (r.data as string[]).map(s => Buffer.from(s)) } : r) }
    const [s] = sightingsIn(packet, MDNS_SERVICE_TYPE.toUpperCase())
    assert.equal(s?.kind, 'service')
    assert.ok(s?.kind === 'service')
    assert.equal(s.port, 37516)
    assert.deepEqual(s.addresses, ['10.1.2.3', 'fe80::3'])
    assert.equal(s.announcement?.nodeId, OTHER)
    assert.deepEqual(sightingsIn({ answers: goodbyeRecords(records) }, MDNS_SERVICE_TYPE), [{ kind: 'goodbye', fqdn: `${OTHER}.${MDNS_SERVICE_TYPE}` }])
    assert.deepEqual(sightingsIn({ answers: records.filter(r => r.type !== 'SRV') }, MDNS_SERVICE_TYPE), [], 'no SRV: wait for the whole record set')
    assert.deepEqual(sightingsIn({ answers: records }, '_nix-serve._tcp.local'), [])
  })
})

class FakeResponder implements MdnsResponder {
  sent: DnsPacket[] = []
  queries: string[] = []
  registered: ResourceRecord[] = []
  destroyed = false
  readonly emitter = new EventEmitter()
  readonly mdns = {
    on: (event: string, listener: (...args: any[]) => void) => this.emitter.on(event, listener),
    removeListener: (event: string, listener: (...args: any[]) => void) => this.emitter.removeListener(event, listener),
    respond: (packet: DnsPacket, callback?: () => void) => { this.sent.push(packet); callback?.() },
    query: (name: string, type: string) => { this.queries.push(`${name} ${type}`) },
    destroy: (callback?: () => void) => { this.destroyed = true; callback?.() }
  }

  register = (records: ResourceRecord[]): void => { this.registered.push(...records) }
  unregister = (records: ResourceRecord[]): void => { this.registered = this.registered.filter(r => !records.includes(r)) }
  receive (records: ResourceRecord[], from: string): void {
    this.emitter.emit('response', { answers: records }, { address: from, port: 5353, family: 'IPv4', size: 0 })
  }
}

describe('MdnsDiscovery', () => {
  const interval = 10_000

  function setup (groupKey?: string, browseOnly = false): { discovery: MdnsDiscovery, responder: FakeResponder, found: DiscoveredPeer[], gone: Array<[string, string]> } {
    const responder = new FakeResponder()
    const discovery = new MdnsDiscovery({ nodeId: ME, listener: browseOnly ? undefined : { port: 40000, host: '0.0.0.0' }, cdcId: CDC, groupTag: groupKey === undefined ? undefined : id => groupTag(groupKey, id), interval, log: silentLogger(), responder: () => responder })
    const found: DiscoveredPeer[] = []
    const gone: Array<[string, string]> = []
    discovery.on('found', p => found.push(p))
    discovery.on('gone', (p, why) => gone.push([p.nodeId, why]))
    discovery.start()
    return { discovery, responder, found, gone }
  }

  it('announces itself, finds a peer, keeps it while it announces, expires it after three missed announcements', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder, found, gone } = setup()
    assert.deepEqual(responder.queries, [`${MDNS_SERVICE_TYPE} PTR`])
    const own = sightingsIn(responder.sent[0]!, MDNS_SERVICE_TYPE)[0]
    assert.ok(own?.kind === 'service')
    assert.equal(own.port, 40000)
    assert.equal(own.announcement?.nodeId, ME)
    assert.equal(own.announcement?.group, undefined)
    assert.ok(responder.registered.some(r => r.type === 'PTR'), 'registered, so queries get answers')
    // Without a group key the listener is also a binary cache, announced as such for ncro and the like.
    const cache = sightingsIn(responder.sent[0]!, NIX_SERVE_SERVICE_TYPE)[0]
    assert.ok(cache?.kind === 'service')
    assert.equal(cache.port, 40000)

    responder.receive(ad(ME, ['10.9.9.9']), '10.9.9.9')
    assert.equal(found.length, 0, 'our own announcement, looped back')
    responder.receive(ad(OTHER, ['192.168.1.7', '10.0.0.7', 'fe80::7', '127.0.0.1']), '10.0.0.7')
    assert.deepEqual(found, [{ nodeId: OTHER, urls: ['http://10.0.0.7:37516', 'http://192.168.1.7:37516'], cdcId: CDC, version: '1' }])

    for (let i = 0; i < 5; i++) {
      t.mock.timers.tick(interval)
      responder.receive(ad(OTHER, ['192.168.1.7', '10.0.0.7']), '10.0.0.7')
    }
    assert.equal(found.length, 1, 'announcements keep it, without a new "found"')
    assert.deepEqual(gone, [])
    assert.ok(responder.sent.length >= 4, `re-announced periodically (${responder.sent.length} packets)`)

    t.mock.timers.tick(3 * interval)
    assert.deepEqual(gone, [], 'three intervals of silence are within the grace')
    t.mock.timers.tick(interval)
    assert.deepEqual(gone, [[OTHER, 'expired']])
    assert.deepEqual(discovery.peers, [])
    await discovery.stop()
  })

  it('drops a peer that says goodbye, and replaces one whose address changed', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder, found, gone } = setup()
    responder.receive(ad(OTHER, ['10.0.0.7']), '10.0.0.7')
    responder.receive(ad(OTHER, ['10.0.0.8']), '10.0.0.8')
    assert.deepEqual(found.map(p => p.urls[0]), ['http://10.0.0.7:37516', 'http://10.0.0.8:37516'])
    assert.deepEqual(gone, [[OTHER, 'changed']])
    responder.receive(goodbyeRecords(ad(OTHER, ['10.0.0.8'])), '10.0.0.8')
    assert.deepEqual(gone, [[OTHER, 'changed'], [OTHER, 'goodbye']])
    await discovery.stop()
  })

  it('ignores nodes of another group, of another protocol version, and without a dialable address', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const key = 'our group'
    const { discovery, responder, found, gone } = setup(key)
    assert.deepEqual(sightingsIn(responder.sent[0]!, NIX_SERVE_SERVICE_TYPE), [], 'with a group key, no plain binary cache is announced')
    assert.equal(sightingsIn(responder.sent[0]!, MDNS_SERVICE_TYPE)[0]?.kind === 'service' &&
      (sightingsIn(responder.sent[0]!, MDNS_SERVICE_TYPE)[0] as { announcement: { group?: string } }).announcement.group, groupTag(key, ME))
    responder.receive(ad(OTHER, ['10.0.0.7']), '10.0.0.7')
    responder.receive(ad(OTHER, ['10.0.0.7'], { group: groupTag('their group', OTHER) }), '10.0.0.7')
    responder.receive(ad(OTHER, ['10.0.0.7'], { group: groupTag(key, OTHER), version: '2' }), '10.0.0.7')
    responder.receive(ad(OTHER, ['fe80::7', '127.0.0.1'], { group: groupTag(key, OTHER) }), '10.0.0.7')
    assert.deepEqual(found, [])
    responder.receive(ad(OTHER, ['10.0.0.7'], { group: groupTag(key, OTHER) }), '10.0.0.7')
    assert.equal(found.length, 1)
    responder.receive(ad(OTHER, ['10.0.0.7'], { group: groupTag('their group', OTHER) }), '10.0.0.7')
    assert.deepEqual(gone, [[OTHER, 'another group']], 'a peer that moved to another group is dropped at once')
    await discovery.stop()
  })

  it('without a listener, finds peers but announces nothing', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder, found } = setup(undefined, true)
    assert.deepEqual(responder.queries, [`${MDNS_SERVICE_TYPE} PTR`])
    responder.receive(ad(OTHER, ['10.0.0.7']), '10.0.0.7')
    assert.equal(found.length, 1)
    t.mock.timers.tick(5 * interval)
    await discovery.stop()
    assert.deepEqual(responder.sent, [], 'no announcement, no goodbye')
    assert.deepEqual(responder.registered, [])
  })

  it('keeps at most 256 discovered peers, whatever a flood of announcements claims', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder, found } = setup()
    for (let i = 0; i < 300; i++) responder.receive(ad(i.toString(16).padStart(32, '0'), [`10.1.${i >> 8}.${i & 255}`]), '10.1.0.1')
    assert.equal(found.length, 256)
    await discovery.stop()
  })

  it('stops cleanly: goodbye sent, socket closed, no timer left', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder } = setup()
    await discovery.stop()
    await discovery.stop()
    const goodbye = responder.sent.at(-1)!
    assert.ok(goodbye.answers!.length > 0 && goodbye.answers!.every(r => r.ttl === 0), 'every record withdrawn with TTL 0')
    assert.deepEqual(sightingsIn(goodbye, MDNS_SERVICE_TYPE), [{ kind: 'goodbye', fqdn: `${ME}.${MDNS_SERVICE_TYPE}` }])
    assert.ok(responder.destroyed)
    assert.deepEqual(responder.registered, [])
    const count = responder.sent.length
    t.mock.timers.tick(10 * interval)
    assert.equal(responder.sent.length, count, 'nothing announced after stop')
    assert.equal(responder.emitter.listenerCount('response'), 0)
  })

  it('feeds the peer table: found peers are added at their best address, gone ones removed', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
    const { discovery, responder } = setup()
    const table = new PeerTable({ log: silentLogger(), selfId: ME, probeInterval: 0 })
    feedPeerTable(discovery, table)
    responder.receive(ad(OTHER, ['192.168.1.7', '10.0.0.7']), '10.0.0.7')
    assert.deepEqual(table.list().map(p => [p.url, p.nodeId, p.cdcId, p.origin]), [['http://10.0.0.7:37516', OTHER, CDC, 'discovered']])
    t.mock.timers.tick(30 * 60_000)
    assert.deepEqual(table.list(), [], 'expired by discovery')
    responder.receive(ad(OTHER, ['10.0.0.7']), '10.0.0.7')
    responder.receive(ad(OTHER, ['10.0.0.9']), '10.0.0.9')
    assert.deepEqual(table.list().map(p => p.url), ['http://10.0.0.9:37516'], 'moved, not doubled')
    table.close()
    await discovery.stop()
  })
})

