/**
 * The embedded IPFS node: Helia on libp2p over TCP, built from an empty configuration so that it
 * does only what the spec asks — no public defaults (no WebRTC/WebSockets, no relays, no AutoNAT,
 * no UPnP, no mDNS, no delegated HTTP routing, no public gateways). Blocks and the datastore live
 * on disk in the repository directory; the datastore keeps the node's private key, so its peer id
 * and multiaddrs stay the same across restarts.
 *
 * Bootstrap peers are tagged keep-alive and dialled at start: libp2p redials them when a
 * connection drops, so a LAN (or test) swarm without any DHT stays connected. Routing is either
 * none (bitswap asks only connected peers), the public Amino DHT as client or server, or a LAN
 * DHT that keeps only private addresses.
 *
 * This module is imported only when an `ipfs:` backend is configured: Helia and libp2p take about
 * two seconds to load.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createHeliaLight } from 'helia'
import { withLibp2pLight, type HeliaWithLibp2p } from '@helia/libp2p'
import { withBitswap } from '@helia/bitswap'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, removePrivateAddressesMapper, removePublicAddressesMapper } from '@libp2p/kad-dht'
import { KEEP_ALIVE } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { FsDatastore } from 'datastore-fs'
import { ConfigError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { listenGateway, type GatewayListener } from './http-gateway.ts'
import { gatewayService } from './libp2p-gateway.ts'
import { PackStore } from './pack-store.ts'
import { lockRepo } from './repo-lock.ts'
import type { EmbeddedInit } from './spec.ts'

export type Helia = HeliaWithLibp2p<any>

/** A running node and the way to stop it (the node, then its stores). */
export interface IpfsNode {
  helia: Helia
  /** This node's block store, without the network behind it. */
  blocks: PackStore
  /** This node's trustless gateway over plain HTTP (`gateway-listen`), when it serves one. */
  gateway: GatewayListener | undefined
  stop: () => Promise<void>
}

const KEEP_ALIVE_TAG = `${KEEP_ALIVE}-narswarm-bootstrap`

export async function startNode (init: EmbeddedInit, dir: string, log: Logger): Promise<IpfsNode> {
  await mkdir(dir, { recursive: true })
  const unlock = await lockRepo(dir)
  try {
    return await startLocked(init, dir, log, unlock)
  } catch (err) {
    await unlock()
    throw err
  }
}

async function startLocked (init: EmbeddedInit, dir: string, log: Logger, unlock: () => Promise<void>): Promise<IpfsNode> {
  const blockstore = new PackStore(dir)
  const datastore = new FsDatastore(join(dir, 'datastore'))
  await blockstore.open()
  await datastore.open()
  let gateway: GatewayListener | undefined
  if (init.gatewayListen.length > 0) {
    try {
      gateway = await listenGateway(init.gatewayListen, async cid => await blockstore.read(cid), log)
    } catch (err) {
      await Promise.all([blockstore.close(), datastore.close()]).catch(() => {})
      throw new ConfigError(`ipfs backend: the HTTP gateway cannot listen (gateway-listen ${init.gatewayListen.join(', ')}): ${(err as Error).message}`)
    }
  }
  const services: Record<string, any> = { identify: identify(), ping: ping() }
  if (init.libp2pGateway) services.http = gatewayService(async cid => await blockstore.read(cid), log)
  if (init.routing !== 'none') {
    const lan = init.routing === 'lan-dht'
    services.dht = kadDHT({
      protocol: lan ? '/ipfs/lan/kad/1.0.0' : '/ipfs/kad/1.0.0',
      peerInfoMapper: lan ? removePublicAddressesMapper : removePrivateAddressesMapper,
      clientMode: init.routing === 'dht-client'
    })
  }
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ blockstore, datastore }), {
    addresses: { listen: init.listen, appendAnnounce: gateway?.announce ?? [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // A stream's window is capped at 4 MiB (of 16) so that a paused stream (a reader that lags)
    // never holds more than its 8 MiB read buffer.
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 4 << 20, maxReadBufferLength: 8 << 20 } })],
    peerDiscovery: [],
    services
  }), {
    // Helia waits 10 ms to batch wants into one message; on a LAN that is much of the time to
    // first byte. 1 ms still batches what is asked in the same turn. Blocks keep the 10 ms
    // batching: fewer, larger messages keep the peer's send queue short.
    sendWantlistDebounce: 1,
    // Helia drops (silently, for the peer) a message to send once 10 are queued for that peer;
    // with short debounces a fast reader can exceed that, so allow more (each message ≤ 2 MiB).
    sendBlocksMaxQueueLength: 32
  }) as Helia
  try {
    await helia.start()
  } catch (err) {
    await helia.stop().catch(() => {})
    await Promise.all([gateway?.close(), blockstore.close(), datastore.close()]).catch(() => {})
    throw new ConfigError(`ipfs backend: the IPFS node cannot start (listen ${init.listen.join(', ')}): ${(err as Error).message}`)
  }
  await connectBootstrap(helia, init.bootstrap, log)
  const stop = async (): Promise<void> => {
    try {
      await helia.stop()
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'ipfs node did not stop cleanly')
    }
    await Promise.all([gateway?.close(), blockstore.close(), datastore.close()]).catch(() => {})
    await unlock()
  }
  return { helia, blocks: blockstore, gateway, stop }
}

/**
 * Tags the bootstrap peers keep-alive and dials them; waits for the first few seconds of dialling
 * so that a fetch right after start-up finds its peers, but never fails start-up over a peer that
 * is down (it is redialled later).
 */
async function connectBootstrap (helia: Helia, addrs: string[], log: Logger): Promise<void> {
  const dials = addrs.map(async text => {
    const addr = multiaddr(text)
    const id = text.slice(text.lastIndexOf('/p2p/') + 5)
    const peerId = peerIdFromString(id)
    await helia.libp2p.peerStore.merge(peerId, { multiaddrs: [addr.decapsulate('/p2p')], tags: { [KEEP_ALIVE_TAG]: { value: 50 } } })
    try {
      await helia.libp2p.dial(addr, { signal: AbortSignal.timeout(5_000) })
    } catch (err) {
      log.warn({ peer: text, err: (err as Error).message }, 'ipfs bootstrap peer not reachable yet; it will be redialled')
    }
  })
  await Promise.all(dials)
}
