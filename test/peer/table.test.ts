import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isPeerHost, normalizePeerUrl, PeerTable } from '../../src/peer/table.ts'
import { silentLogger } from '../../src/log.ts'

test('loopback, link-local and unspecified addresses are not peers; static peers may be', () => {
  for (const host of ['127.0.0.1', '127.8.0.1', '::1', '[::1]', 'fe80::1', '169.254.3.4', '0.0.0.0', '::', 'localhost', '::ffff:127.0.0.1']) {
    assert.equal(isPeerHost(host), false, host)
  }
  for (const host of ['10.0.0.7', '192.168.1.2', 'fd00::1', 'nas.local']) assert.equal(isPeerHost(host), true, host)
  const table = new PeerTable({ log: silentLogger(), staticPeers: ['http://127.0.0.1:1234/'] })
  assert.deepEqual(table.available(), ['http://127.0.0.1:1234'])
  assert.equal(table.add({ url: 'http://127.0.0.1:5678' }), false)
  assert.equal(table.add({ url: 'http://[fe80::1]:5678' }), false)
  assert.equal(table.add({ url: 'http://10.0.0.7:37516' }), true)
  assert.equal(table.available().length, 2)
  assert.throws(() => normalizePeerUrl('http://10.0.0.7:1/x'))
  assert.throws(() => normalizePeerUrl('file:///etc'))
})

test('ourselves is not a peer; discovered peers expire and leave; static ones stay', () => {
  let now = 1_000_000
  const table = new PeerTable({ log: silentLogger(), staticPeers: ['http://10.0.0.1:1'], selfId: 'me', now: () => now, defaultTtl: 60_000 })
  assert.equal(table.add({ url: 'http://10.0.0.2:1', nodeId: 'me' }), false)
  table.add({ url: 'http://10.0.0.3:1', nodeId: 'other' })
  table.add({ url: 'http://10.0.0.4:1', ttl: 120_000 })
  now += 61_000
  assert.deepEqual(table.list().map(p => p.url).sort(), ['http://10.0.0.1:1', 'http://10.0.0.4:1'])
  table.remove('http://10.0.0.4:1')
  table.remove('http://10.0.0.1:1')
  assert.deepEqual(table.list().map(p => p.url), ['http://10.0.0.1:1'])
})

test('a failure cools a peer down; wrong data ranks it last; latency orders the rest', () => {
  let now = 1_000_000
  const table = new PeerTable({ log: silentLogger(), staticPeers: ['http://10.0.0.1:1', 'http://10.0.0.2:1', 'http://10.0.0.3:1'], now: () => now })
  table.success('http://10.0.0.1:1', 40)
  table.success('http://10.0.0.2:1', 5)
  table.success('http://10.0.0.3:1', 1)
  assert.deepEqual(table.available(), ['http://10.0.0.3:1', 'http://10.0.0.2:1', 'http://10.0.0.1:1'])
  table.failure('http://10.0.0.2:1', 'ECONNREFUSED')
  assert.deepEqual(table.available(), ['http://10.0.0.3:1', 'http://10.0.0.1:1'])
  table.integrityFailure('http://10.0.0.3:1', 'wrong chunk')
  now += 16_000
  assert.deepEqual(table.available(), ['http://10.0.0.1:1', 'http://10.0.0.2:1', 'http://10.0.0.3:1'])
  const [good, , bad] = table.list()
  assert.ok(good!.score > bad!.score)
  assert.equal(bad!.integrityFailures, 1)
})

test('probes learn node ids and drop a static peer that is this node', async () => {
  const table = new PeerTable({
    log: silentLogger(), selfId: 'me', staticPeers: ['http://127.0.0.1:1', 'http://127.0.0.1:2', 'http://127.0.0.1:3'], probeInterval: 0,
    probe: async url => {
      if (url.endsWith(':3')) throw new Error('ECONNREFUSED')
      return { nodeId: url.endsWith(':1') ? 'me' : 'peer-2', cdcId: 'x' }
    }
  })
  await table.probeAll()
  assert.deepEqual(table.list().map(p => [p.url, p.nodeId]), [['http://127.0.0.1:2', 'peer-2'], ['http://127.0.0.1:3', undefined]])
  assert.deepEqual(table.available(), ['http://127.0.0.1:2'])
  table.close()
})
