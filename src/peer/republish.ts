/**
 * Every user becomes a peer, beyond the LAN too: where an IPFS or BitTorrent backend is
 * configured, each NAR the chunk store commits that is shared with LAN peers (signed by a trusted key) is published
 * there and its locator recorded in the first mapper together with the signed narinfo, so other
 * narswarms that read the index can fetch it from this node. Publishing runs one NAR at a time
 * from a bounded queue, after serving: a failure is logged, never seen by Nix or peers, and a full
 * queue drops the oldest entries (they are published again when next fetched).
 */
import type { ChunkStore, CommittedNar } from '../chunk/types.ts'
import type { Logger } from '../log.ts'
import type { PeerShares } from './shares.ts'
import type { Backend, Mapper } from '../types.ts'

/** Locator schemes of the networks a committed NAR is offered to. */
const PUBLISHED_SCHEMES = ['ipfs', 'magnet']
const MAX_QUEUE = 1000

export interface RepublisherInit {
  store: ChunkStore
  backends: readonly Backend[]
  mapper?: Mapper
  /** Only what is shared with LAN peers is published (the same trust rule). */
  shares: PeerShares
  log: Logger
}

export class Republisher {
  readonly #init: RepublisherInit
  readonly #targets: Backend[]
  readonly #queue: CommittedNar[] = []
  readonly #unsubscribe: () => void
  readonly #closing = new AbortController()
  #running: Promise<void> | undefined
  published = 0
  failed = 0

  constructor (init: RepublisherInit) {
    this.#init = init
    this.#targets = init.backends.filter(b => b.publish !== undefined && b.schemes.some(s => PUBLISHED_SCHEMES.includes(s)))
    this.#unsubscribe = this.#targets.length === 0 || init.mapper?.record === undefined
      ? () => {}
      : init.store.onCommit(nar => this.#enqueue(nar))
  }

  /** Resolves when the queue is empty (for tests and a clean stop). */
  async idle (): Promise<void> {
    while (this.#running !== undefined) await this.#running
  }

  async close (): Promise<void> {
    this.#unsubscribe()
    this.#queue.length = 0
    this.#closing.abort()
    await this.#running?.catch(() => {})
  }

  #enqueue (nar: CommittedNar): void {
    if (this.#closing.signal.aborted) return
    this.#queue.push(nar)
    if (this.#queue.length > MAX_QUEUE) this.#queue.shift()
    this.#running ??= this.#drain().finally(() => { this.#running = undefined })
  }

  async #drain (): Promise<void> {
    // Let the commit's own work (serving Nix) go first.
    await new Promise(resolve => setImmediate(resolve))
    for (let nar = this.#queue.shift(); nar !== undefined && !this.#closing.signal.aborted; nar = this.#queue.shift()) {
      for (const backend of this.#targets) await this.#publish(backend, nar)
    }
  }

  async #publish (backend: Backend, { manifest, storePath }: CommittedNar): Promise<void> {
    const { store, mapper, shares, log } = this.#init
    const signal = this.#closing.signal
    const narHash = manifest.narHash
    const narInfo = shares.narInfoOf(narHash)
    if (narInfo === undefined) return
    const body = store.render(narHash, { signal })
    if (body === undefined) return
    try {
      const locator = await backend.publish!({ narHash, narSize: manifest.narSize, body }, { signal })
      await mapper!.record!(narHash, locator, { signal, narInfo })
      this.published++
      log.debug({ backend: backend.name, storePath, narHash: narHash.toString(), locator: locator.url.slice(0, 80) }, 'committed NAR published')
    } catch (err) {
      if (signal.aborted) return
      this.failed++
      log.warn({ backend: backend.name, storePath, narHash: narHash.toString(), err: (err as Error).message }, 'publishing a committed NAR failed')
    }
  }
}
