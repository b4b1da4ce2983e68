/**
 * Real mDNS between real narswarm processes: each node runs in its own network namespace on a
 * bridge this test creates (test/helpers/netns.ts), so the multicast is real and stays inside the
 * test. Skipped, with the reason, where namespaces cannot be made (not root, no iproute2).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createLan, netnsUnavailable } from '../helpers/netns.ts'
import { runNarswarm, startNarswarm, type LogLine, type NarswarmProcess } from '../helpers/narswarm.ts'
import type { SwarmStatus } from '../../src/peer/swarm.ts'

const GROUP = 'our-lan-group-key-0123456789'
const STRANGERS = 'another-group-key-9876543210'

function nodeId (node: NarswarmProcess): string {
  return readFileSync(join(node.stateDir, 'node-id'), 'utf8').trim()
}

const found = (id: string) => (l: LogLine): boolean => l.msg === 'peer found' && l.nodeId === id
const left = (id: string, reason: string) => (l: LogLine): boolean => l.msg === 'mDNS: peer left' && l.peer === id && l.reason === reason

test('nodes on one LAN find each other by mDNS; another group is not taken; a node that stops or vanishes is dropped', { skip: netnsUnavailable() ?? false, timeout: 90_000 }, async (t) => {
  const lan = createLan(4)
  const nodes: Array<NarswarmProcess | undefined> = []
  // Processes first: a deleted namespace lives on while a process runs in it.
  t.after(async () => { await Promise.all(nodes.map(async n => await n?.stop())); lan.close() })
  // One after the other: starting costs CPU seconds, and together they could outlast a start timeout.
  for (const [i, host] of lan.hosts.entries()) {
    nodes[i] = await startNarswarm([
      '--peer-listen', '0.0.0.0:0', '--discovery', 'mdns', '--discovery-interval', '1s', '--peer-key', i < 3 ? GROUP : STRANGERS,
      '--upstream', 'http://127.0.0.1:9?require-sigs=false'
    ], { wrap: lan.wrap(host) })
  }
  const [a, b, c, stranger] = nodes as [NarswarmProcess, NarswarmProcess, NarswarmProcess, NarswarmProcess]
  const ids = [a, b, c, stranger].map(nodeId)

  // Each member finds the two others, at the address of their own namespace.
  for (const [i, node] of [a, b, c].entries()) {
    for (const [j] of [a, b, c].entries()) {
      if (i === j) continue
      const line = await node.waitForLog(found(ids[j]!))
      assert.match(String(line.peer), new RegExp(`^http://${lan.hosts[j]!.address.replaceAll('.', '\\.')}:\\d+$`))
    }
  }
  // `narswarm peers` lists them as discovered peers, by node id.
  const listed = await runNarswarm(['peers', '--url', a.url, '--json'], { wrap: lan.wrap(lan.hosts[0]!) })
  assert.equal(listed.code, 0, listed.stderr)
  const status = JSON.parse(listed.stdout) as SwarmStatus
  assert.equal(status.nodeId, ids[0])
  assert.equal(status.discovery, 'mdns')
  assert.deepEqual(status.peers.map(p => [p.nodeId, p.origin]).sort(), [[ids[1], 'discovered'], [ids[2], 'discovered']].sort())

  // The stranger announced too (its announcement reached each member and was turned down)…
  for (const node of [a, b, c]) {
    await node.waitForLog(l => l.msg === 'announcement ignored' && l.peer === ids[3] && l.reason === 'another group')
  }
  await stranger.waitForLog(l => l.msg === 'announcement ignored' && l.peer === ids[0] && l.reason === 'another group')
  // …and is in no table, nor is anyone in its table.
  for (const node of [a, b, c]) assert.equal(node.logs.find(found(ids[3]!)), undefined)
  assert.equal(stranger.logs.find(l => l.msg === 'peer found'), undefined)

  // A node killed outright sends no goodbye: the others drop it after three missed announcements.
  c.child.kill('SIGKILL')
  await a.waitForLog(left(ids[2]!, 'expired'), 20_000)
  await b.waitForLog(left(ids[2]!, 'expired'), 20_000)

  // A node stopped cleanly says goodbye, closes its socket and exits.
  assert.equal(await b.stop(), 0)
  await a.waitForLog(left(ids[1]!, 'goodbye'), 20_000)
  assert.ok(b.logs.some(l => l.msg === 'mDNS discovery stopped'))

  for (const node of nodes) await node!.stop()
  lan.close()
  const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  assert.ok(lan.hosts.every(h => !namespaces.includes(h.name)), 'namespaces removed')
  assert.ok(!execFileSync('ip', ['link', 'show'], { encoding: 'utf8' }).includes(`${lan.bridge}:`), 'bridge removed')
})
