/**
 * The `ipfs:` backend: an IPFS node living in the narswarm process (see node.ts). It opens
 * `ipfs://<cid>` locators from its own blockstore, fetching missing blocks from peers over
 * bitswap, and publishes NARs by importing them into its blockstore (import-params.ts), which also
 * makes it serve them to every peer that asks. Published roots are announced through the
 * rate-limited announcer when a DHT is configured.
 *
 * Blocks fetched from peers are kept in the blockstore, so a second NAR that shares chunks with
 * one fetched before transfers only the chunks it lacks. Each open logs, at debug level, how many
 * of its bytes came from the network.
 */
import type { CID } from 'multiformats/cid'
import type { Logger } from '../../log.ts'
import type { AbortOptions, Backend, Locator, NarSource, NarUpload } from '../../types.ts'
import { Announcer } from './announcer.ts'
import { IMPORT_PARAMS_TEXT } from './import-params.ts'
import { locatorOf } from './locator.ts'
import { startNode, type Helia, type IpfsNode } from './node.ts'
import { openFile } from './open-file.ts'
import { importNar } from './publish.ts'
import { repoPath, type EmbeddedInit } from './spec.ts'

/** Longer than bitswap's 5 s window in which a peer does not resend a block it has just sent. */
const REWANT_MS = 6_000

export class EmbeddedIpfsBackend implements Backend {
  readonly name = 'ipfs:'
  readonly schemes = ['ipfs'] as const
  readonly #node: IpfsNode
  readonly #helia: Helia
  readonly #init: EmbeddedInit
  readonly #log: Logger
  readonly #announcer: Announcer | undefined
  #closing: Promise<void> | undefined
  /** Bytes of blocks this node fetched from peers, since start. */
  networkBytes = 0

  constructor (node: IpfsNode, init: EmbeddedInit, log: Logger) {
    this.#node = node
    this.#helia = node.helia
    this.#init = init
    this.#log = log
    if (init.announce) {
      this.#announcer = new Announcer(async (cid, o) => { await this.#helia.routing.provide(cid, o) }, { batch: init.announceBatch, interval: init.announceInterval, log })
    }
  }

  /** The node's multiaddrs, with its peer id: what another node gives as `bootstrap`. */
  get multiaddrs (): string[] {
    return this.#helia.libp2p.getMultiaddrs().map(a => a.toString())
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    let network = 0
    let local = 0
    const source = await openFile(this.name, locator, async (cid, o) => {
      const had = await this.#helia.blockstore.has(cid, o)
      const block = had ? await collect(this.#helia.blockstore.get(cid, o)) : await this.#want(cid, o.signal)
      if (had) local += block.length
      else { network += block.length; this.networkBytes += block.length }
      return block
    }, this.#init, options.signal)
    if (source === undefined) return undefined
    const log = this.#log
    const body = source.body
    source.body = (async function * () {
      yield * body
      log.debug({ locator: locator.url, bytes: source.fileSize, networkBytes: network, localBytes: local }, 'ipfs file read')
    })()
    return source
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
        return await collect(this.#helia.blockstore.get(cid, { signal: AbortSignal.any([signal, attempt]) }))
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
    if (!await this.#helia.blockstore.has(cid, options)) return undefined
    return await collect(this.#helia.blockstore.get(cid, { ...options, offline: true }))
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    const cid = await importNar(nar, this.#helia.blockstore, options)
    this.#announcer?.add(cid)
    return { url: locatorOf(cid), compression: 'none', fileSize: nar.narSize }
  }

  async close (): Promise<void> {
    this.#closing ??= (async () => {
      await this.#announcer?.close()
      await this.#node.stop()
      this.#log.info({}, 'ipfs node stopped')
    })()
    await this.#closing
  }
}

export async function createEmbedded (init: EmbeddedInit, stateDir: string, log: Logger): Promise<EmbeddedIpfsBackend> {
  const node = await startNode(init, repoPath(init, stateDir), log)
  const backend = new EmbeddedIpfsBackend(node, init, log)
  log.info({ peerId: node.helia.libp2p.peerId.toString(), addresses: backend.multiaddrs, routing: init.routing, import: IMPORT_PARAMS_TEXT }, 'ipfs node listening')
  return backend
}

async function collect (chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of chunks) parts.push(c)
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}
