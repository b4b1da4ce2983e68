/**
 * The `ipfs:` backend: an IPFS node living in the narswarm process (see node.ts). It opens
 * `ipfs://<cid>` locators from its own blockstore, fetching missing blocks from peers over
 * bitswap, and publishes NARs by importing them into its blockstore (import-params.ts), which also
 * makes it serve them to every peer that asks. Published roots are announced through the
 * rate-limited announcer when a DHT is configured.
 *
 * A NAR is fetched as CAR streams from a peer's trustless gateway (over plain HTTP when the peer
 * serves one there, else over libp2p; see libp2p-gateway.ts), and over bitswap for whatever the
 * streams do not deliver. Blocks fetched from peers are kept in the blockstore, so a second NAR
 * that shares chunks with one fetched before transfers only the chunks it lacks. Each open logs,
 * at debug level, how many of its bytes came from the network.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../../log.ts'
import type { AbortOptions, Backend, Locator, NarSource, NarUpload } from '../../types.ts'
import { Announcer } from './announcer.ts'
import { IMPORT_PARAMS_TEXT } from './import-params.ts'
import { CarFeed, closingFeed } from './car-feed.ts'
import { PeerGateways } from './http-gateway.ts'
import { peerCarSources } from './libp2p-gateway.ts'
import { cidOf, locatorOf } from './locator.ts'
import { blockBytes, byteLength } from './block-bytes.ts'
import { startNode, type IpfsNode } from './node.ts'
import { openFile } from './open-file.ts'
import { importNar } from './publish.ts'
import { repoPath, type EmbeddedInit } from './spec.ts'

/** Longer than bitswap's 5 s window in which a peer does not resend a block it has just sent. */
const REWANT_MS = 6_000

export class EmbeddedIpfsBackend implements Backend {
  readonly name = 'ipfs:'
  readonly schemes = ['ipfs'] as const
  readonly #node: IpfsNode
  readonly #init: EmbeddedInit
  readonly #log: Logger
  readonly #announcer: Announcer | undefined
  /** Peers' gateways over plain HTTP. */
  readonly #peerGateways = new PeerGateways()
  #closing: Promise<void> | undefined
  /** Bytes this node fetched from peers, since start: CAR streams and bitswap blocks. */
  networkBytes = 0
  /** Of those, the bytes that came in CAR streams (trustless gateways over libp2p). */
  carBytes = 0

  constructor (node: IpfsNode, init: EmbeddedInit, log: Logger) {
    this.#node = node
    this.#init = init
    this.#log = log
    if (init.announce) {
      this.#announcer = new Announcer(async (cid, o) => { await this.#node.helia.routing.provide(cid, o) }, { batch: init.announceBatch, interval: init.announceInterval, log })
    }
  }

  /** Requests this node's gateway over plain HTTP has answered since start. */
  get gatewayAnswers (): number {
    return this.#node.gateway?.answered ?? 0
  }

  /** The peer ids the routing (the DHT) gives as providers of `cid`, as they are found. */
  async * providers (cid: CID, options: AbortOptions = {}): AsyncGenerator<string> {
    // Some routers give the id in its CID form: written back in the usual base58 one.
    for await (const provider of this.#node.helia.routing.findProviders(cid, options)) yield peerIdFromString(provider.id.toString()).toString()
  }

  /** Roots announced to the DHT since start. */
  get announcedRoots (): number {
    return this.#announcer?.announced ?? 0
  }

  /** The node's libp2p multiaddrs, with its peer id: what another node gives as `bootstrap`. */
  get multiaddrs (): string[] {
    return this.#node.helia.libp2p.getMultiaddrs().map(a => a.toString()).filter(a => !a.includes('/http/'))
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const root = cidOf(locator.url)
    if (root === undefined) return undefined
    let bitswap = 0
    let local = 0
    // Peers that serve a trustless gateway over libp2p stream the whole DAG in one CAR; bitswap
    // fetches whatever the stream does not deliver (and everything from other peers).
    const feed = new CarFeed(root, this.#init.libp2pGateway ? peerCarSources(this.#node.helia.libp2p, this.#init.fetchHttp ? this.#peerGateways : undefined, this.#log) : [], {
      local: async cid => await this.#node.blocks.read(cid),
      has: async cid => await this.#node.blocks.has(cid),
      store: async block => { await this.#node.blocks.put(block.cid, block.bytes) },
      log: this.#log
    })
    const open = async (): Promise<NarSource | undefined> => await openFile(this.name, locator, async (cid, o) => {
      const got = await feed.block(cid, o.offset, o.signal)
      if (got !== undefined) {
        if (got.local) local += byteLength(got.bytes)
        return got.bytes
      }
      const block = await this.#want(cid, o.signal)
      bitswap += block.length
      this.networkBytes += block.length
      return block
    }, this.#init, options.signal)
    return await closingFeed(feed, open, async complete => {
      await feed.settled()
      this.networkBytes += feed.bytesReceived
      this.carBytes += feed.bytesReceived
      if (complete) this.#log.debug({ locator: locator.url, networkBytes: bitswap + feed.bytesReceived, carBytes: feed.bytesReceived, localBytes: local }, 'ipfs file read')
    })
  }

  /**
   * A block from the network. A want that goes unanswered for REWANT_MS is withdrawn and made
   * again: a peer may drop a message it could not queue (Helia does when its send queue for a peer
   * is full), and a fresh want makes it send the block again. `signal` carries the caller's
   * deadline (stall-timeout), which ends the retries.
   */
  async #want (cid: CID, signal: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      const attempt = AbortSignal.timeout(REWANT_MS)
      try {
        return await blockBytes(this.#node.helia.blockstore.get(cid, { signal: AbortSignal.any([signal, attempt]) }))
      } catch (err) {
        if (signal.aborted || !attempt.aborted) throw err
        this.#log.debug({ cid: cid.toString() }, 'ipfs block not delivered yet; asking again')
      }
    }
  }

  /**
   * A block from this node's own store, never from the network; undefined when it is not here.
   * For serving blocks to others (a gateway in front of this node).
   */
  async localBlock (cid: CID, options: AbortOptions = {}): Promise<Uint8Array | undefined> {
    options.signal?.throwIfAborted()
    return await this.#node.blocks.read(cid)
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    // Straight into the pack store: Helia's blockstore would skip any block the index names, even
    // one whose bytes a crash lost, where the pack store writes it again.
    const cid = await importNar(nar, this.#node.blocks, options)
    this.#announcer?.add(cid)
    return { url: locatorOf(cid), compression: 'none', fileSize: nar.narSize }
  }

  async close (): Promise<void> {
    this.#closing ??= (async () => {
      await this.#announcer?.close()
      await this.#node.stop()
      await this.#peerGateways.close()
      this.#log.info({}, 'ipfs node stopped')
    })()
    await this.#closing
  }
}

export async function createEmbedded (init: EmbeddedInit, stateDir: string, log: Logger): Promise<EmbeddedIpfsBackend> {
  const node = await startNode(init, repoPath(init, stateDir), log)
  const backend = new EmbeddedIpfsBackend(node, init, log)
  log.info({ peerId: node.helia.libp2p.peerId.toString(), addresses: backend.multiaddrs, httpGateway: node.gateway?.announce ?? [], routing: init.routing, import: IMPORT_PARAMS_TEXT }, 'ipfs node listening')
  return backend
}
