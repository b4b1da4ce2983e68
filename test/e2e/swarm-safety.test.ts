/**
 * The LAN swarm's safety with real narswarm processes and the real Nix over 127.0.0.1: hostile
 * peers next to a good one cost Nix nothing and are scored down; a dead peer costs one timeout,
 * then is left alone; a path no trusted key signed is never served to a peer; with a group key, a
 * peer without it gets nothing.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { Readable } from 'node:stream'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, hashPartOf, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { realiseWith } from '../helpers/swarm.ts'
import { startHostilePeer, type PeerFault } from '../helpers/hostile-peer.ts'
import { freePort } from '../helpers/net.ts'
import { GroupKey } from '../../src/peer/auth.ts'
import { PEER_PATH } from '../../src/peer/protocol.ts'
import { PeerClient } from '../../src/peer/client.ts'
import { chunkStream } from '../../src/chunk/fastcdc.ts'
import type { SwarmStatus } from '../../src/peer/swarm.ts'

const GROUP = 'our-lan-group-key-0123456789'

async function status (node: NarswarmProcess): Promise<SwarmStatus> {
  return await (await fetch(`${node.url}/narswarm/peers`)).json() as SwarmStatus
}

describe('LAN swarm safety with real Nix', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let upstream: CacheServer
  let upstreamNarBytes = 0
  let good: NarswarmProcess
  const running: Array<{ stop: () => Promise<unknown> }> = []
  const track = <T extends { stop: () => Promise<unknown> } | { close: () => Promise<unknown> }>(x: T): T => {
    running.push('stop' in x ? x : { stop: x.close })
    return x
  }
  let stores = 0
  const freshStore = (): string => join(nix.dir, `store-${stores++}`)
  const upstreamArgs = (): string[] => ['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`]

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: false })
    const dir = join(nix.dir, 'cache')
    await copyTo(nix, closure, dir, 'none')
    upstream = await startCacheServer(dir, { onServed: (path, bytes) => { if (path.startsWith('/nar/')) upstreamNarBytes += bytes } })
    good = track(await startNarswarm(upstreamArgs()))
    await (await realiseWith(nix, closure.publicKey, closure.top))(good, freshStore())
  })
  after(async () => {
    await Promise.all(running.map(async r => await r.stop().catch(() => null)))
    await upstream?.close()
    await nix?.cleanup()
  })

  test('hostile peers next to a good one: Nix succeeds in one run, nothing corrupt is stored, the hostile peers are scored down', async () => {
    const faults: PeerFault[] = ['wrong-chunk', 'other-manifest', 'stall', 'vanish']
    const hostiles = await Promise.all(faults.map(async f => track(await startHostilePeer(good.peerUrl!, f))))
    // The good peer answers slowly, so the hostile ones rank first and are asked first.
    const slowGood = track(await startHostilePeer(good.peerUrl!, 'none', { delay: 30 }))
    // With the upstream's NARs gone, only the peers can deliver.
    upstream.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'status', status: 500 } })
    try {
      const node = track(await startNarswarm([...upstreamArgs(), ...[...hostiles, slowGood].flatMap(h => ['--peer', h.url])]))
      const root = freshStore()
      await (await realiseWith(nix, closure.publicKey, closure.top))(node, root)
      await nix.run('nix', ['store', 'verify', '--store', `local?root=${root}`, '--no-trust', '--trusted-public-keys', closure.publicKey, '-r', closure.top])
      for (const path of closure.paths) await node.waitForLog(l => l.msg === 'NAR served' && l.storePath === path && l.source === 'peers')
      const peers = (await status(node)).peers
      const byUrl = new Map(peers.map(p => [p.url, p]))
      const goodState = byUrl.get(slowGood.url)!
      assert.ok(goodState.served.bytes > 0)
      for (const h of hostiles) {
        const state = byUrl.get(h.url)!
        if (h.requests.some(r => r.includes('/manifest/') || r.includes('/chunks'))) {
          assert.ok(state.failures > 0, `${h.fault}: ${JSON.stringify(state)}`)
          assert.ok(state.score < goodState.score, `${h.fault} scored below the good peer`)
        }
        if (h.fault === 'wrong-chunk' || h.fault === 'other-manifest') assert.ok(state.integrityFailures > 0, `${h.fault}: ${JSON.stringify(state)}`)
      }
    } finally {
      upstream.faults.length = 0
    }
  })

  test('a dead peer costs one timeout, then is left alone', async () => {
    const dead = track(await startHostilePeer(good.peerUrl!, 'dead'))
    const refused = `http://127.0.0.1:${await freePort()}`
    const node = track(await startNarswarm([...upstreamArgs(), '--peer', dead.url, '--peer', refused, '--peer', good.peerUrl!]))
    const root = freshStore()
    const realise = async (path: string): Promise<void> => await (await realiseWith(nix, closure.publicKey, path))(node, root)
    // The first NAR: the good peer answers, the dead one is asked too and times out on its own.
    await realise(closure.note)
    for (let i = 0; i < 50 && ((await status(node)).peers.find(p => p.url === dead.url)?.failures ?? 0) === 0; i++) {
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const asked = dead.requests.filter(r => r.includes('/manifest/')).length
    assert.ok(asked <= 1, dead.requests.join(', '))
    // Cooling down now: the next NARs, one request after the other, do not ask it again.
    for (const path of [closure.tree, closure.big, closure.top]) await realise(path)
    for (const path of closure.paths) await node.waitForLog(l => l.msg === 'NAR served' && l.storePath === path && l.source === 'peers')
    assert.equal(dead.requests.filter(r => r.includes('/manifest/')).length, asked, dead.requests.join(', '))
    const peers = new Map((await status(node)).peers.map(p => [p.url, p]))
    assert.ok(peers.get(dead.url)!.failures >= 1)
    assert.ok(peers.get(refused)!.failures >= 1)
  })

  test('a path no trusted key signed is never served to a peer, nor anything of the local store', async () => {
    // A private path: built here, in a cache written without a signing key, substituted from an
    // upstream with require-sigs=false.
    const file = join(nix.dir, 'private.nix')
    await writeFile(file, `derivation { name = "private"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${randomBytes(8).toString('hex')} > $out" ]; }`)
    const secret = (await nix.run('nix-build', [file, '--no-out-link'])).trim()
    const unsignedDir = join(nix.dir, 'cache-unsigned')
    await nix.run('nix', ['copy', '--to', `file://${unsignedDir}?compression=none`, secret])
    const unsigned = track(await startCacheServer(unsignedDir))
    const node = track(await startNarswarm([...upstreamArgs(), '--upstream', `${unsigned.url}?require-sigs=false&priority=10`]))
    const root = freshStore()
    await nix.run('nix-store', ['--store', `local?root=${root}`, '--realise', secret, '--option', 'substituters', node.url, '--option', 'require-sigs', 'false'])
    await (await realiseWith(nix, closure.publicKey, closure.top))(node, root)
    await node.waitForLog(l => l.msg === 'NAR served' && l.storePath === secret)
    const narHash = (JSON.parse(await nix.run('nix', ['path-info', '--json', secret])) as Array<{ narHash: string }>)[0]!.narHash
    const nix32 = narHash.replace(/^sha256:/, '')
    const get = async (path: string): Promise<number> => (await fetch(`${node.peerUrl}${PEER_PATH}${path}`)).status
    assert.equal(await get(`/narinfo/${hashPartOf(secret)}`), 404)
    assert.equal(await get(`/manifest/${nix32}`), 404)
    // What a trusted key signed is served (so the 404s above are not an accident).
    assert.equal(await get(`/narinfo/${hashPartOf(closure.tree)}`), 200)
    // A path of the local /nix/store that narswarm never fetched is unknown to the listener.
    const localFile = join(nix.dir, 'local.nix')
    await writeFile(localFile, `derivation { name = "local"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${randomBytes(8).toString('hex')} > $out" ]; }`)
    const local = (await nix.run('nix-build', [localFile, '--no-out-link'])).trim()
    assert.equal(await get(`/narinfo/${hashPartOf(local)}`), 404)
    // The listener's plain binary cache (for Nix without narswarm) holds to the same rule.
    const plain = async (path: string): Promise<number> => (await fetch(`${node.peerUrl}${path}`)).status
    for (const path of [`/${hashPartOf(secret)}.narinfo`, `/nar/${nix32}.nar`, `/nar/${nix32}.nar.zst`, `/${hashPartOf(local)}.narinfo`]) assert.equal(await plain(path), 404, path)
    assert.equal(await plain(`/${hashPartOf(closure.tree)}.narinfo`), 200)
    // Nor are its chunks, nor does the listener say it has them.
    const ids: Uint8Array[] = []
    for await (const chunk of chunkStream(Readable.from(execFileSync('nix-store', ['--dump', secret], { env: nix.env, maxBuffer: 64 << 20 })))) {
      ids.push(createHash('sha256').update(chunk).digest())
    }
    for (const id of ids) assert.equal(await get(`/chunk/${Buffer.from(id).toString('hex')}`), 404)
    assert.deepEqual(await new PeerClient().have(node.peerUrl!, ids, { answer: 1000, stall: 1000 }), ids.map(() => false))
  })

  test('with a group key, a peer without it gets nothing; one with it gets everything', async () => {
    const member = track(await startNarswarm([...upstreamArgs(), '--peer-key', GROUP]))
    await (await realiseWith(nix, closure.publicKey, closure.top))(member, freshStore())
    const info = `${PEER_PATH}/info`
    assert.equal((await fetch(`${member.peerUrl}${info}`)).status, 401)
    assert.equal((await fetch(`${member.peerUrl}${info}`, { headers: { authorization: new GroupKey('another-group-key-9876543210').authorization('GET', info) } })).status, 403)
    const stranger = track(await startNarswarm([...upstreamArgs(), '--peer', member.peerUrl!]))
    let before = upstreamNarBytes
    await (await realiseWith(nix, closure.publicKey, closure.top))(stranger, freshStore())
    assert.ok(upstreamNarBytes - before > 0, 'the stranger had to use the upstream')
    assert.ok(!stranger.logs.some(l => l.msg === 'NAR filled from peers'))
    const friend = track(await startNarswarm([...upstreamArgs(), '--peer-key', GROUP, '--peer', member.peerUrl!]))
    before = upstreamNarBytes
    await (await realiseWith(nix, closure.publicKey, closure.top))(friend, freshStore())
    assert.equal(upstreamNarBytes - before, 0, 'the group member got every NAR from its peer')
  })
})
