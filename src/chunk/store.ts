/**
 * The local chunk store (types.ts says what it promises): chunk files on disk (files.ts), the
 * index in the state database (index-db.ts), and the rules that tie them together — a NAR is
 * committed only after every chunk it needs is durable and the whole NAR matched its NarHash and
 * NarSize; a chunk that fails its hash on reading is deleted with every NAR that needs it; chunks
 * used by a NAR in flight are held, and NARs being rendered are leased, so neither eviction nor a
 * corrupt neighbour pulls bytes from under them. Start-up checks, verification, eviction and
 * statistics live in maintenance.ts.
 */
import { createHash } from 'node:crypto'
import type { DatabaseSync } from 'node:sqlite'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError, FormatError, IntegrityError, StorageError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { silentLogger } from '../log.ts'
import type { NixHash } from '../nix/hash.ts'
import type { AbortOptions } from '../types.ts'
import { Chunker, DEFAULT_CDC, type CdcParams } from './fastcdc.ts'
import { ChunkFiles, chunkIdOf, CorruptChunk, hexOf, storageError } from './files.ts'
import { ChunkIndex, dropChunkTables } from './index-db.ts'
import { decodeManifest, encodeManifest } from './manifest.ts'
import { Maintenance, type CheckReport, type StoreStats, type VerifyReport } from './maintenance.ts'
import type { ChunkId, ChunkStore, CommittedNar, Manifest, ManifestChunk, NarIdentity } from './types.ts'

export const DEFAULT_CAPACITY = 10 * 1024 ** 3

export interface LocalChunkStoreInit {
  db: DatabaseSync
  /** The state directory: chunk files go under `<dir>/chunks`. */
  dir: string
  /** Bytes on disk the store may keep (default 10 GiB); 0 keeps a NAR only while it is in use. */
  capacity?: number
  params?: CdcParams
  log?: Logger
  now?: () => number
  /** How long a NAR just committed is safe from eviction, for the requests waiting for it (ms). */
  freshLease?: number
  /** How long a chunk nothing references yet may wait for its NAR's commit (ms). */
  orphanGrace?: number
  /** Chunks read ahead while rendering. */
  prefetch?: number
}

/**
 * Empties the chunk store under `dir` whatever chunker made it: index rows first, then the files.
 * No narswarm may be using it meanwhile.
 */
export async function clearChunkStore (db: DatabaseSync, dir: string): Promise<void> {
  dropChunkTables(db)
  await rm(join(dir, 'chunks'), { recursive: true, force: true })
}

/** Chunks written by one ingest at a time at most (bounds memory: each is ≤ 256 KiB). */
const WRITES_IN_FLIGHT = 8

export class LocalChunkStore implements ChunkStore {
  readonly cdcId: string
  readonly files: ChunkFiles
  readonly index: ChunkIndex
  readonly log: Logger
  readonly now: () => number
  readonly params: CdcParams
  readonly maintenance: Maintenance
  readonly #prefetch: number
  readonly #freshLease: number
  /** Chunk hex → number of in-flight NARs that need it. */
  readonly holds = new Map<string, number>()
  /** NarHash hex → number of readers (and fresh commits) using it. */
  readonly leases = new Map<string, number>()
  readonly #writing = new Map<string, Promise<void>>()
  readonly #listeners = new Set<(nar: CommittedNar) => void>()
  readonly #timers = new Set<NodeJS.Timeout>()
  #closed = false

  private constructor (init: LocalChunkStoreInit) {
    this.params = init.params ?? DEFAULT_CDC
    this.cdcId = new Chunker(this.params).cdcId
    this.files = new ChunkFiles(join(init.dir, 'chunks'))
    this.index = new ChunkIndex(init.db)
    this.log = init.log ?? silentLogger()
    this.now = init.now ?? Date.now
    this.#prefetch = init.prefetch ?? 8
    this.#freshLease = init.freshLease ?? 30_000
    this.maintenance = new Maintenance(this, init.capacity ?? DEFAULT_CAPACITY, init.orphanGrace ?? 3_600_000)
  }

  /** Opens (or creates) the store, refusing one made by another chunker, and runs the start-up check. */
  static async open (init: LocalChunkStoreInit): Promise<LocalChunkStore> {
    const store = new LocalChunkStore(init)
    const stored = store.index.meta('cdc_id')
    if (stored === undefined) store.index.setMeta('cdc_id', store.cdcId)
    else if (stored !== store.cdcId) {
      throw new ConfigError(`the chunk store in ${init.dir} was made with chunker ${String(stored)}, but this narswarm chunks with ${store.cdcId}; ` +
        "empty it with 'narswarm cache clear' (its NARs will be fetched again when asked for), or use another state-dir")
    }
    try {
      await store.files.init()
    } catch (err) {
      throw storageError(`cannot create the chunk directory ${store.files.root}`, err)
    }
    await store.maintenance.startupCheck()
    return store
  }

  get capacity (): number { return this.maintenance.capacity }

  manifest (narHash: NixHash): Manifest | undefined {
    if (narHash.algorithm !== 'sha256') return undefined
    const row = this.index.nar(narHash.digest)
    return row === undefined ? undefined : decodeManifest(row.manifest)
  }

  has (ids: readonly ChunkId[]): boolean[] {
    return ids.map(id => this.index.hasChunk(id))
  }

  /** The NarHash of the NAR recorded for a store path, if the store holds it. */
  narHashOf (storePath: string): Uint8Array | undefined { return this.index.narOfPath(storePath) }

  /** Counts as an access for eviction, e.g. when a peer fetched the NAR's chunks. */
  touch (narHash: NixHash): void { this.index.touch(narHash.digest, this.now()) }

  async readChunk (id: ChunkId, options?: AbortOptions): Promise<Uint8Array | undefined> {
    options?.signal?.throwIfAborted()
    const row = this.index.chunk(id)
    if (row === undefined) return undefined
    try {
      return await this.#read(hexOf(id), row.size)
    } catch (err) {
      if (err instanceof IntegrityError) return undefined
      throw err
    }
  }

  /** A verified chunk; a missing or corrupt one is dropped (with its NARs) and IntegrityError thrown. */
  async #read (hex: string, size: number): Promise<Uint8Array> {
    let bytes: Uint8Array | undefined
    let why = 'its file is missing'
    try {
      bytes = await this.files.read(hex, size)
    } catch (err) {
      if (!(err instanceof CorruptChunk)) throw err
      why = err.message
    }
    if (bytes !== undefined) return bytes
    this.log.warn({ chunk: hex, why }, 'dropping a bad chunk and the NARs that need it')
    await this.maintenance.dropChunks([Buffer.from(hex, 'hex')])
    throw new IntegrityError(`chunk ${hex}: ${why}; the NARs that need it were dropped`)
  }

  render (narHash: NixHash, options?: AbortOptions): AsyncIterable<Uint8Array> | undefined {
    const row = narHash.algorithm === 'sha256' ? this.index.nar(narHash.digest) : undefined
    if (row === undefined) { this.index.bump('misses'); return undefined }
    this.index.bump('hits')
    this.index.touch(row.narHash, this.now())
    const manifest = decodeManifest(row.manifest)
    // The lease is taken now, not when iteration starts, so eviction cannot slip in between.
    // A render that is never iterated must not keep the NAR forever.
    const lease = this.#leaseFor(narHash.toBase16(), this.#freshLease)
    return {
      [Symbol.asyncIterator]: () => this.#renderChunks(manifest.chunks, options?.signal, lease.keep())
    }
  }

  async * #renderChunks (chunks: ManifestChunk[], signal: AbortSignal | undefined, release: () => void): AsyncGenerator<Uint8Array> {
    const queue: Array<Promise<Uint8Array>> = []
    let next = 0
    const fill = (): void => {
      while (queue.length < this.#prefetch && next < chunks.length) {
        const c = chunks[next++]!
        const p = this.#read(hexOf(c.id), c.size)
        p.catch(() => {})
        queue.push(p)
      }
    }
    try {
      fill()
      while (queue.length > 0) {
        signal?.throwIfAborted()
        const bytes = await queue.shift()!
        fill()
        yield bytes
      }
    } finally {
      release()
    }
  }

  /** Marks a NAR in use (safe from eviction) until the returned function is called. */
  lease (key: string): () => void {
    this.leases.set(key, (this.leases.get(key) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.leases.get(key) ?? 1) - 1
      if (n <= 0) this.leases.delete(key)
      else this.leases.set(key, n)
      if (n <= 0 && !this.#closed) this.maintenance.scheduleEviction()
    }
  }

  /**
   * A lease that ends by itself after `ms` unless `keep` is called first; `keep` returns the
   * function that ends it (a fresh lease if the first one had already run out).
   */
  #leaseFor (key: string, ms: number): { keep: () => () => void } {
    const release = this.lease(key)
    let expired = false
    const timer = setTimeout(() => { this.#timers.delete(timer); expired = true; release() }, ms).unref()
    this.#timers.add(timer)
    return {
      keep: () => {
        clearTimeout(timer)
        this.#timers.delete(timer)
        return expired ? this.lease(key) : release
      }
    }
  }

  hold (hex: string): void { this.holds.set(hex, (this.holds.get(hex) ?? 0) + 1) }
  unhold (hex: string): void {
    const n = (this.holds.get(hex) ?? 1) - 1
    if (n <= 0) this.holds.delete(hex)
    else this.holds.set(hex, n)
  }

  /** Writes a chunk unless it is stored or being stored; true when this call wrote it. */
  async #store (hex: string, id: Uint8Array, bytes: Uint8Array): Promise<boolean> {
    const pending = this.#writing.get(hex)
    if (pending !== undefined) { await pending; return false }
    if (this.index.hasChunk(id)) return false
    const write = (async () => {
      const stored = await this.files.write(hex, bytes)
      try {
        this.index.addChunk(id, bytes.length, stored, this.now())
      } catch (err) {
        await this.files.remove(hex).catch(() => {})
        throw storageError(`cannot index chunk ${hex}`, err)
      }
    })()
    this.#writing.set(hex, write)
    const done = (): void => { this.#writing.delete(hex) }
    write.then(done, done)
    await write
    return true
  }

  async ingest (expected: NarIdentity, body: AsyncIterable<Uint8Array>, options?: AbortOptions): Promise<Manifest> {
    const signal = options?.signal
    const existing = this.manifest(expected.narHash)
    if (existing !== undefined && existing.narSize === expected.narSize) {
      await (body as AsyncIterable<Uint8Array> & { return?: () => unknown })[Symbol.asyncIterator]().return?.()
      if (expected.storePath !== undefined) this.index.addPath(expected.storePath, expected.narHash.digest)
      return existing
    }
    await this.maintenance.makeRoom(expected.narSize)
    const hasher = createHash(expected.narHash.algorithm)
    const chunker = new Chunker(this.params)
    const chunks: ManifestChunk[] = []
    const held: string[] = []
    const written: string[] = []
    const inFlight = new Set<Promise<void>>()
    let failure: unknown
    let size = 0
    const put = async (bytes: Uint8Array): Promise<void> => {
      const id = chunkIdOf(bytes)
      const hex = hexOf(id)
      chunks.push({ id, size: bytes.length })
      this.hold(hex)
      held.push(hex)
      const p = this.#store(hex, id, bytes).then(wrote => { if (wrote) written.push(hex) }, (err: unknown) => { failure ??= err })
      inFlight.add(p)
      void p.then(() => inFlight.delete(p))
      if (inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(inFlight)
      if (failure !== undefined) throw failure
    }
    try {
      for await (const piece of body) {
        signal?.throwIfAborted()
        size += piece.length
        if (size > expected.narSize) throw new IntegrityError(`NAR ${expected.narHash.toString()} is longer than its NarSize ${expected.narSize}`)
        hasher.update(piece)
        for (const c of chunker.push(piece)) await put(c)
      }
      const last = chunker.finish()
      if (last !== undefined) await put(last)
      await Promise.all(inFlight)
      if (failure !== undefined) throw failure
      if (size !== expected.narSize) throw new IntegrityError(`NAR ${expected.narHash.toString()} has ${size} bytes, its NarSize is ${expected.narSize}`)
      const digest = hasher.digest()
      if (!digest.equals(expected.narHash.digest)) throw new IntegrityError(`NAR hashes to ${expected.narHash.algorithm}:${digest.toString('hex')}, expected ${expected.narHash.toString()}`)
      const manifest: Manifest = { cdcId: this.cdcId, narHash: expected.narHash, narSize: size, chunks }
      return this.#commit(manifest, expected.storePath)
    } catch (err) {
      await Promise.allSettled(inFlight)
      for (const hex of held.splice(0)) this.unhold(hex)
      await this.maintenance.removeUnreferenced(written)
      throw err
    } finally {
      for (const hex of held) this.unhold(hex)
    }
  }

  async putChunk (id: ChunkId, bytes: Uint8Array, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    const hex = hexOf(id)
    if (hexOf(chunkIdOf(bytes)) !== hex) throw new IntegrityError(`chunk bytes do not hash to ${hex}`)
    await this.#store(hex, id, bytes)
  }

  async commitManifest (manifest: Manifest, expected: NarIdentity, options?: AbortOptions): Promise<void> {
    if (manifest.cdcId !== this.cdcId) throw new FormatError(`manifest made by chunker ${manifest.cdcId}, this store uses ${this.cdcId}`)
    if (!manifest.narHash.equals(expected.narHash) || manifest.narSize !== expected.narSize) {
      throw new IntegrityError(`manifest names ${manifest.narHash.toString()} (${manifest.narSize} bytes), expected ${expected.narHash.toString()} (${expected.narSize} bytes)`)
    }
    // The strict decoder's checks (sizes add up, chunk bounds) apply to manifests built in memory too.
    const checked = decodeManifest(encodeManifest(manifest))
    if (this.manifest(expected.narHash) !== undefined) {
      if (expected.storePath !== undefined) this.index.addPath(expected.storePath, expected.narHash.digest)
      return
    }
    const hexes = checked.chunks.map(c => hexOf(c.id))
    for (const hex of hexes) this.hold(hex)
    try {
      const missing = checked.chunks.filter(c => !this.index.hasChunk(c.id)).length
      if (missing > 0) throw new IntegrityError(`${missing} of ${checked.chunks.length} chunks of ${expected.narHash.toString()} are not stored`)
      const hasher = createHash(expected.narHash.algorithm)
      for await (const bytes of this.#renderChunks(checked.chunks, options?.signal, () => {})) hasher.update(bytes)
      const digest = hasher.digest()
      if (!digest.equals(expected.narHash.digest)) throw new IntegrityError(`chunks of the manifest hash to ${digest.toString('hex')}, expected ${expected.narHash.toString()}`)
      this.#commit(checked, expected.storePath)
    } finally {
      for (const hex of hexes) this.unhold(hex)
    }
  }

  #commit (manifest: Manifest, storePath: string | undefined): Manifest {
    const key = manifest.narHash.digest
    const counts = new Map<string, { id: Uint8Array, n: number }>()
    for (const c of manifest.chunks) {
      const hex = hexOf(c.id)
      const e = counts.get(hex)
      if (e === undefined) counts.set(hex, { id: c.id, n: 1 })
      else e.n++
    }
    let winner: Manifest | undefined
    try {
      this.index.transaction(() => {
        const row = this.index.nar(key)
        if (row !== undefined) winner = decodeManifest(row.manifest)
        else {
          for (const [hex, { id, n }] of counts) {
            if (!this.index.ref(id, n)) throw new StorageError(`chunk ${hex} was removed before its NAR could be committed`)
          }
          this.index.addNar(key, manifest.narSize, manifest.cdcId, encodeManifest(manifest), this.now())
        }
        if (storePath !== undefined) this.index.addPath(storePath, key)
      })
    } catch (err) {
      throw storageError(`cannot commit NAR ${manifest.narHash.toString()}`, err)
    }
    if (winner !== undefined) return winner
    // Kept for the requests waiting for it, even with a cap of 0.
    this.#leaseFor(manifest.narHash.toBase16(), this.#freshLease)
    for (const listener of this.#listeners) {
      try {
        listener(storePath === undefined ? { manifest } : { manifest, storePath })
      } catch (err) {
        this.log.error({ err }, 'chunk store commit listener failed')
      }
    }
    this.maintenance.scheduleEviction()
    return manifest
  }

  /** Pins (or unpins) a NAR: eviction skips pinned NARs. False when the store does not hold it. */
  pin (narHash: NixHash, pinned = true): boolean {
    return narHash.algorithm === 'sha256' && this.index.setPinned(narHash.digest, pinned)
  }

  stats (): StoreStats { return this.maintenance.stats() }
  async verify (onProgress?: (done: number, total: number) => void): Promise<VerifyReport> { return await this.maintenance.verify(onProgress) }
  async gc (): Promise<CheckReport & { evicted: number }> { return await this.maintenance.gc() }

  onCommit (listener: (nar: CommittedNar) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    await Promise.allSettled(this.#writing.values())
    await this.maintenance.idle()
  }
}
