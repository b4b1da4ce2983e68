/**
 * LAN peers as a source of NARs: a StoreFiller that fetches into the chunk store only the chunks
 * it lacks, from every peer that has them, and commits the NAR once the store verified it whole
 * against the signed NarHash and NarSize.
 *
 * 1. Manifest: the best few peers are asked at once (connect 250 ms, answer 1 s), the next few
 *    only when those do not have it or fail; the first manifest that describes this NAR (NarHash,
 *    NarSize, chunker) is used, and peers that answer the same manifest later join as holders. A
 *    manifest of another NAR scores its peer down.
 * 2. Which chunks: the manifest diffed against the store (`has`); peers that do not hold the NAR
 *    are asked which of the missing chunks they have (`have`), and join with those.
 * 3. Chunks: 6 requests in flight, spread over the peers that have them (least loaded first),
 *    batched up to 512 KiB, each sent as the peer stores it (compressed or not); each chunk is
 *    checked against its id on arrival and stored as it came (`putChunk`). A peer that fails,
 *    stalls (2 s of silence) or sends a wrong chunk is dropped for this NAR and its chunks go to
 *    the others.
 * 4. The NAR is hashed as its chunks arrive, in order (in-order-hash.ts; no new request goes out
 *    while too much arrived ahead of a gap), and copied as it is hashed when the caller asks for
 *    a copy (`newCopy`: the substituter's spool), and `commitManifest` commits it; if it does not
 *    match, the manifest was a lie, its peers are scored down and the next distinct manifest, if
 *    any, is tried.
 *
 * Resolves false when no peer has the NAR; throws UpstreamError when peers had it but failed.
 * A dead peer costs one connect timeout, then cools down in the table.
 */
import type { ChunkStore, FillOptions, Manifest, NarCopy, NarIdentity, StoreFiller } from '../chunk/types.ts'
import { FormatError, IntegrityError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { PeerChunk, PeerClient, RequestTimeouts } from './client.ts'
import { InOrderHash } from './in-order-hash.ts'
import { chunkHex, MAX_BATCH_IDS, MAX_HAVE_IDS } from './protocol.ts'
import type { PeerTable } from './table.ts'

export interface PeerFillerInit {
  table: PeerTable
  client: PeerClient
  log: Logger
  /** Peers asked for a manifest at once (default 3), in at most three waves. */
  fanout?: number
  /** Chunk requests in flight for one NAR (default 6). */
  inFlight?: number
  manifestTimeouts?: RequestTimeouts
  chunkTimeouts?: RequestTimeouts
}

/** One distinct manifest and the peers that answered it. */
interface Offer { manifest: Manifest, holders: string[], key: string }

/** What one fill moved: bytes and chunks fetched (and their bytes on the wire), bytes the store already held, peers used. */
interface Moved { bytes: number, wire: number, chunks: number, reused: number, peers: number }

/** The chunks one request asks for: up to this many bytes. */
const BATCH_BYTES = 512 << 10
/** Bytes received and waiting to be stored, at most (then no new request goes out). */
const MAX_STORING = 4 << 20

export class PeerFiller implements StoreFiller {
  readonly name = 'peers'
  readonly #table: PeerTable
  readonly #client: PeerClient
  readonly #log: Logger
  readonly #fanout: number
  readonly #inFlight: number
  readonly #manifestTimeouts: RequestTimeouts
  readonly #chunkTimeouts: RequestTimeouts

  constructor (init: PeerFillerInit) {
    this.#table = init.table
    this.#client = init.client
    this.#log = init.log
    this.#fanout = init.fanout ?? 3
    this.#inFlight = init.inFlight ?? 6
    this.#manifestTimeouts = init.manifestTimeouts ?? { answer: 1_000, stall: 1_000 }
    this.#chunkTimeouts = init.chunkTimeouts ?? { answer: 2_000, stall: 2_000 }
  }

  async fill (expected: NarIdentity, store: ChunkStore, options: FillOptions = {}): Promise<boolean> {
    if (store.manifest(expected.narHash) !== undefined) return true
    const signal = options.signal
    const started = performance.now()
    const search = new ManifestSearch(this, expected, store, signal)
    const failures: string[] = []
    for (let tried = 0; ; tried++) {
      // The next distinct manifest: wait for answers, asking more peers while none is left.
      while (search.offers.length <= tried && (search.pending > 0 || search.askMore())) await search.changed()
      signal?.throwIfAborted()
      const offer = search.offers[tried]
      if (offer === undefined) break
      try {
        const copy = await options.newCopy?.().catch(() => undefined)
        const moved = await this.#fetch(offer, search, expected, store, signal, copy)
        for (const holder of offer.holders) this.#table.served(holder, { nars: 1 })
        this.#log.debug({ storePath: expected.storePath, narHash: expected.narHash.toString(), ...moved, ms: Math.round(performance.now() - started) }, 'NAR filled from peers')
        return true
      } catch (err) {
        if (signal?.aborted === true) throw err
        if (err instanceof IntegrityError && !(err instanceof ChunkError)) {
          for (const holder of offer.holders) this.#table.integrityFailure(holder, `manifest does not render ${expected.narHash.toString()}`)
        }
        failures.push((err as Error).message)
      }
    }
    if (failures.length === 0) return false
    throw new UpstreamError('peers', failures.join('; '))
  }

  /** Fetches the chunks the store lacks and commits; returns the bytes moved and reused. */
  async #fetch (offer: Offer, search: ManifestSearch, expected: NarIdentity, store: ChunkStore, signal?: AbortSignal, copy?: NarCopy): Promise<Moved> {
    const { manifest } = offer
    const held = store.has(manifest.chunks.map(c => c.id))
    const seen = new Set<string>()
    const missing = manifest.chunks.filter((c, i) => {
      if (held[i]!) return false
      const key = chunkHex(c.id)
      if (seen.has(key)) return false
      seen.add(key)
      return true
    })
    const reused = manifest.narSize - manifest.chunks.reduce((n, c, i) => n + (held[i]! ? 0 : c.size), 0)
    const moved: Moved = { bytes: 0, wire: 0, chunks: 0, reused, peers: 0 }
    const order = new InOrderHash(manifest, held, store, expected.narHash.algorithm, copy)
    if (missing.length > 0) await new ChunkFetch(this, offer, search, missing, store, moved, order, signal).run()
    const digest = await order.digest()
    if (digest !== undefined && !digest.equals(expected.narHash.digest)) {
      throw new IntegrityError(`chunks of the manifest hash to ${expected.narHash.algorithm}:${digest.toString('hex')}, expected ${expected.narHash.toString()}`)
    }
    await store.commitManifest(manifest, expected, { signal, narHashChecked: digest !== undefined })
    return moved
  }

  // Used by ChunkFetch, which does the scheduling.
  get client (): PeerClient { return this.#client }
  get table (): PeerTable { return this.#table }
  get inFlight (): number { return this.#inFlight }
  get chunkTimeouts (): RequestTimeouts { return this.#chunkTimeouts }
  get manifestTimeouts (): RequestTimeouts { return this.#manifestTimeouts }
  get fanout (): number { return this.#fanout }

  /** Scores a failed peer: down hard for wrong data, a cooldown for anything else. */
  penalise (peer: string, err: unknown): void {
    // A busy peer (503) is asked again next time; only this NAR goes elsewhere.
    if (err instanceof UpstreamError && err.status === 503) return
    if (err instanceof FormatError || err instanceof IntegrityError) this.#table.integrityFailure(peer, (err as Error).message)
    else this.#table.failure(peer, (err as Error).message)
  }
}

/** A chunk whose bytes did not match its id: the peer's fault, not the manifest's. */
class ChunkError extends IntegrityError {}

/** The chunks of one NAR, spread over the peers that have them. */
class ChunkFetch {
  readonly #filler: PeerFiller
  readonly #missing: Manifest['chunks']
  readonly #store: ChunkStore
  readonly #moved: Moved
  readonly #signal: AbortSignal | undefined
  /** Which missing chunks (by index) each peer may be asked for; holders have all. */
  readonly #sources = new Map<string, Set<number> | 'all'>()
  readonly #load = new Map<string, number>()
  readonly #queue: number[]
  readonly #used = new Set<string>()
  readonly #dropped = new Set<string>()
  readonly #offer: Offer
  readonly #order: InOrderHash
  #running = 0
  /** Bytes received and not yet written: no new request while there are too many. */
  #storing = 0
  /** Chunks written and not yet durable and indexed: the fetch ends only once there are none. */
  #syncing = 0
  #haves = 0
  #done = false
  #finish: (err?: Error) => void = () => {}

  readonly #search: ManifestSearch

  constructor (filler: PeerFiller, offer: Offer, search: ManifestSearch, missing: Manifest['chunks'], store: ChunkStore, moved: Moved, order: InOrderHash, signal?: AbortSignal) {
    this.#order = order
    order.onAdvance = () => this.#pump()
    this.#filler = filler
    this.#missing = missing
    this.#store = store
    this.#moved = moved
    this.#signal = signal
    this.#queue = missing.map((_, i) => i)
    this.#offer = offer
    this.#search = search
    for (const holder of offer.holders) this.#sources.set(holder, 'all')
    // Peers without this NAR may hold some of its chunks (an older version of the package).
    const others = new Set([...search.absent, ...filler.table.available(store.cdcId)].filter(p => !this.#sources.has(p)))
    for (const peer of [...others].slice(0, 4)) this.#askHave(peer)
  }

  async run (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#finish = err => {
        this.#finish = () => {}
        this.#done = true
        if (err === undefined) resolve(); else reject(err)
      }
      this.#signal?.addEventListener('abort', () => this.#finish(this.#signal!.reason as Error), { once: true })
      this.#search.onChange(() => this.#pump())
      this.#pump()
    })
  }

  #askHave (peer: string): void {
    this.#haves++
    const ids = this.#missing.slice(0, MAX_HAVE_IDS).map(c => c.id)
    // Like manifest requests, bounded by their own timeouts rather than the fill's signal.
    this.#filler.client.have(peer, ids, { answer: 500, stall: 500 }).then(bits => {
      const has = new Set<number>()
      bits.forEach((b, i) => { if (b) has.add(i) })
      if (has.size > 0 && !this.#sources.has(peer) && !this.#dropped.has(peer)) this.#sources.set(peer, has)
    }, (err: unknown) => {
      this.#filler.penalise(peer, err)
    }).finally(() => { this.#haves--; this.#pump() })
  }

  #has (peer: string, index: number): boolean {
    const s = this.#sources.get(peer)
    return s === 'all' || (s !== undefined && s.has(index))
  }

  #pump (): void {
    if (this.#done) return
    if (this.#queue.length === 0 && this.#running === 0 && this.#storing === 0 && this.#syncing === 0) { this.#finish(); return }
    // Peers whose manifest arrived after the fetch began join as holders.
    for (const holder of this.#offer.holders) if (!this.#dropped.has(holder) && !this.#sources.has(holder)) this.#sources.set(holder, 'all')
    // Chunks far ahead of the in-order hash wait until the gap is filled; a request always goes out
    // when none is running, since the gap may be in the queue (a failed request's chunks).
    while (this.#running < this.#filler.inFlight && this.#queue.length > 0 && this.#storing < MAX_STORING && (!this.#order.ahead || this.#running === 0)) {
      const first = this.#queue[0]!
      const rank = this.#filler.table.available()
      const order = (p: string): number => { const i = rank.indexOf(p); return i < 0 ? rank.length : i }
      const peer = [...this.#sources.keys()].filter(p => this.#has(p, first))
        .sort((a, b) => (this.#load.get(a) ?? 0) - (this.#load.get(b) ?? 0) || order(a) - order(b))[0]
      if (peer === undefined) {
        // Every source failed: peers not asked yet may hold the NAR (their answers call pump).
        if (this.#running === 0 && this.#storing === 0 && this.#syncing === 0 && this.#haves === 0 && this.#search.pending === 0 && !this.#search.askMore()) {
          this.#finish(new UpstreamError('peers', `no peer left with chunk ${chunkHex(this.#missing[first]!.id)}`))
        }
        return
      }
      const batch: number[] = []
      let bytes = 0
      for (let i = 0; i < this.#queue.length && batch.length < MAX_BATCH_IDS; i++) {
        const index = this.#queue[i]!
        const size = this.#missing[index]!.size
        if (!this.#has(peer, index) || (batch.length > 0 && bytes + size > BATCH_BYTES)) continue
        batch.push(index)
        bytes += size
        this.#queue.splice(i--, 1)
      }
      this.#running++
      this.#load.set(peer, (this.#load.get(peer) ?? 0) + 1)
      this.#request(peer, batch).finally(() => {
        this.#running--
        this.#load.set(peer, (this.#load.get(peer) ?? 1) - 1)
        this.#pump()
      })
    }
  }

  /**
   * One `chunks` request; what it did not deliver goes back on the queue. Chunks are stored as they
   * arrive, and the request ends when its body was read, not when its chunks are on disk: the next
   * request goes out while they are written (and fsynced), up to MAX_STORING bytes behind.
   */
  async #request (peer: string, batch: number[]): Promise<void> {
    const chunks = batch.map(i => this.#missing[i]!)
    let done = 0
    const t0 = performance.now()
    try {
      for await (const chunk of this.#filler.client.chunks(peer, chunks.map(c => c.id), chunks.map(c => c.size), this.#filler.chunkTimeouts, this.#signal)) {
        const index = batch[done++]!
        if (chunk !== undefined) { this.#put(peer, index, chunk); continue }
        // Not there after all: asked elsewhere.
        const s = this.#sources.get(peer)
        if (s === 'all') this.#sources.set(peer, new Set(this.#missing.map((_, i) => i).filter(i => i !== index)))
        else s?.delete(index)
        this.#queue.push(index)
      }
      this.#filler.table.success(peer, performance.now() - t0)
    } catch (err) {
      this.#queue.unshift(...batch.slice(done))
      this.#drop(peer, err)
    }
  }

  /**
   * Stores one chunk as it arrived; a chunk that is not what its id says drops its peer. The chunk
   * counts as arrived once it is written: waiting for its fdatasync (shared with the records
   * written meanwhile) before the next request went out held fills up by whatever the disk took.
   */
  #put (peer: string, index: number, { bytes, compressed, wire }: PeerChunk): void {
    this.#storing += bytes.length
    this.#syncing++
    const id = this.#missing[index]!.id
    let written = false
    const onWritten = (): void => {
      if (written) return
      written = true
      this.#storing -= bytes.length
      this.#order.add(id, bytes)
      this.#moved.bytes += bytes.length
      this.#moved.wire += wire
      this.#moved.chunks++
      this.#filler.table.served(peer, { chunks: 1, bytes: bytes.length })
      if (!this.#used.has(peer)) { this.#used.add(peer); this.#moved.peers++ }
      this.#pump()
    }
    this.#store.putChunk(id, bytes, { signal: this.#signal, onWritten, ...(compressed === undefined ? {} : { compressed }) }).then(onWritten, (err: unknown) => {
      if (!written) {
        this.#storing -= bytes.length
        this.#queue.unshift(index)
      }
      // After it was written, only this node's store can have failed: that ends the fetch.
      this.#drop(peer, err instanceof IntegrityError && !written ? new ChunkError(`${peer}: ${err.message}`) : err)
    }).finally(() => {
      this.#syncing--
      this.#pump()
    })
  }

  /** Leaves a peer out of this NAR and scores it; an error of this node (its store) ends the fetch. */
  #drop (peer: string, error: unknown): void {
    this.#sources.delete(peer)
    this.#dropped.add(peer)
    if (this.#signal?.aborted === true) return
    if (error instanceof ChunkError) this.#filler.table.integrityFailure(peer, error.message)
    else if (error instanceof IntegrityError || error instanceof UpstreamError || error instanceof FormatError) this.#filler.penalise(peer, error)
    else this.#finish(error as Error)
  }
}

/** The peers asked for one NAR's manifest, and what they answered, grouped by manifest. */
class ManifestSearch {
  readonly offers: Offer[] = []
  /** Peers that answered without this NAR (they may still hold some of its chunks). */
  readonly absent: string[] = []
  pending = 0
  readonly #asked = new Set<string>()
  readonly #filler: PeerFiller
  readonly #expected: NarIdentity
  readonly #store: ChunkStore
  readonly #signal: AbortSignal | undefined
  readonly #listeners = new Set<() => void>()
  #waves = 0

  constructor (filler: PeerFiller, expected: NarIdentity, store: ChunkStore, signal?: AbortSignal) {
    this.#filler = filler
    this.#expected = expected
    this.#store = store
    this.#signal = signal
  }

  /** Asks the next best peers not asked yet; false when there are none (or enough were asked). */
  askMore (): boolean {
    if (this.#waves >= 3 || this.#signal?.aborted === true) return false
    const peers = this.#filler.table.available(this.#store.cdcId, this.#asked).slice(0, this.#filler.fanout)
    if (peers.length === 0) return false
    this.#waves++
    for (const peer of peers) this.#ask(peer)
    return true
  }

  /** Resolves at the next answer. */
  async changed (): Promise<void> {
    await new Promise<void>(resolve => {
      const once = (): void => { this.#listeners.delete(once); resolve() }
      this.#listeners.add(once)
    })
  }

  onChange (listener: () => void): void {
    this.#listeners.add(listener)
  }

  #ask (peer: string): void {
    const { table, client } = this.#filler
    const expected = this.#expected
    this.#asked.add(peer)
    this.pending++
    const t0 = performance.now()
    // Not cut short when the fill ends (another peer or source won): the request is bounded by its
    // own timeouts, and a peer that does not answer must still be found out and left alone.
    client.manifest(peer, expected.narHash, expected.narSize, this.#filler.manifestTimeouts).then(manifest => {
      table.success(peer, performance.now() - t0)
      if (manifest === undefined) { this.absent.push(peer); return }
      if (!manifest.narHash.equals(expected.narHash) || manifest.narSize !== expected.narSize) {
        table.integrityFailure(peer, `manifest of another NAR (${manifest.narHash.toString()}) for ${expected.narHash.toString()}`)
        return
      }
      if (manifest.cdcId !== this.#store.cdcId) { this.absent.push(peer); return }
      const key = manifestKey(manifest)
      const offer = this.offers.find(o => o.key === key)
      if (offer !== undefined) offer.holders.push(peer)
      else this.offers.push({ manifest, holders: [peer], key })
    }, (err: unknown) => {
      this.#filler.penalise(peer, err)
    }).finally(() => {
      this.pending--
      for (const listener of [...this.#listeners]) listener()
    })
  }
}

function manifestKey (m: Manifest): string {
  return `${m.cdcId}|${m.chunks.map(c => `${chunkHex(c.id)}:${c.size}`).join(',')}`
}
