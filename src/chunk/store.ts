/**
 * The local chunk store (types.ts says what it promises): chunk records in pack files on disk
 * (files.ts, pack-writer.ts, packs.ts), the index in the state database (index-db.ts), and the rules that tie them together — a NAR is
 * committed only after every chunk it needs is durable and the whole NAR matched its NarHash and
 * NarSize; a chunk that fails its hash on reading is deleted with every NAR that needs it; chunks
 * used by a NAR in flight are held, and NARs being rendered are leased, so neither eviction nor a
 * corrupt neighbour pulls bytes from under them. Start-up checks, verification, eviction and
 * statistics live in maintenance.ts.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { DatabaseSync } from 'node:sqlite'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError, FormatError, IntegrityError, StorageError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { silentLogger } from '../log.ts'
import type { NixHash } from '../nix/hash.ts'
import type { AbortOptions } from '../types.ts'
import { processTag } from '../util/process.ts'
import { Chunker, DEFAULT_CDC, type CdcParams } from './fastcdc.ts'
import { ChunkFiles, chunkIdOf, CorruptChunk, hexOf, storageError, type ChunkAt } from './files.ts'
import { ChunkIndex, dropChunkTables, ROWS_AT_ONCE, type ChunkRow } from './index-db.ts'
import type { StoredChunk } from './pack-writer.ts'
import { InUse } from './in-use.ts'
import { chunkRefs, decodeManifest, encodeManifest } from './manifest.ts'
import { ingestNar } from './ingest.ts'
import { Maintenance, type CheckReport, type StoreStats, type VerifyReport } from './maintenance.ts'
import type { ChunkFrames, ChunkId, ChunkStore, CommittedNar, IngestOptions, Manifest, ManifestChunk, NarIdentity, PutChunkOptions } from './types.ts'

const DEFAULT_CAPACITY = 10 * 1024 ** 3
/** Chunks read ahead while rendering. */
const PREFETCH = 8
/** Chunk index rows are committed together: at most this many, waiting at most this long. */
const ROW_BATCH = 64
const ROW_DELAY_MS = 2

/** A chunk whose file is written, waiting for its index row. */
interface PendingRow { id: Uint8Array, size: number, stored: StoredChunk }

export interface LocalChunkStoreInit {
  db: DatabaseSync
  /** The state directory: chunk packs go under `<dir>/chunks`. */
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
  /** False skips fsync of chunk packs: not crash-safe, for benchmarks of other things. */
  fsync?: boolean
  /** The size at which a pack takes no more records (pack-writer.ts); smaller in tests. */
  packBytes?: number
}

/**
 * Empties the chunk store under `dir` whatever chunker made it: index rows first, then the files.
 * No narswarm may be using it meanwhile.
 */
export async function clearChunkStore (db: DatabaseSync, dir: string): Promise<void> {
  dropChunkTables(db)
  await rm(join(dir, 'chunks'), { recursive: true, force: true })
}

export class LocalChunkStore implements ChunkStore {
  readonly cdcId: string
  readonly files: ChunkFiles
  readonly index: ChunkIndex
  readonly log: Logger
  readonly now: () => number
  readonly params: CdcParams
  readonly maintenance: Maintenance
  readonly #freshLease: number
  readonly inUse: InUse
  readonly #writing = new Map<string, Promise<void>>()
  /** Who owns the packs this store writes (`<pid>-<start time>-<random>`). */
  readonly owner: string
  readonly #rows: Array<PendingRow & { resolve: () => void, reject: (err: Error) => void }> = []
  #rowTimer: NodeJS.Timeout | undefined
  readonly #listeners = new Set<(nar: CommittedNar) => void>()
  #closed = false

  private constructor (init: LocalChunkStoreInit) {
    this.params = init.params ?? DEFAULT_CDC
    this.cdcId = new Chunker(this.params).cdcId
    this.index = new ChunkIndex(init.db)
    // The packs this store appends to are its own until it closes: another process sharing the
    // store leaves them alone, and so does this one's maintenance while rows for them are pending.
    this.owner = `${processTag()}-${randomBytes(4).toString('hex')}`
    this.files = new ChunkFiles(join(init.dir, 'chunks'), {
      create: () => this.index.newPack(this.owner),
      seal: (id, bytes) => { this.index.growPack(id, bytes) }
    }, { ...(init.fsync === undefined ? {} : { fsync: init.fsync }), ...(init.packBytes === undefined ? {} : { packBytes: init.packBytes }) })
    this.log = init.log ?? silentLogger()
    this.now = init.now ?? Date.now
    this.#freshLease = init.freshLease ?? 30_000
    this.maintenance = new Maintenance(this, init.capacity ?? DEFAULT_CAPACITY, init.orphanGrace ?? 3_600_000)
    this.inUse = new InUse(() => this.maintenance.scheduleEviction())
  }

  get capacity (): number { return this.maintenance.capacity }

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

  manifest (narHash: NixHash): Manifest | undefined {
    if (narHash.algorithm !== 'sha256') return undefined
    const row = this.index.nar(narHash.digest)
    return row === undefined ? undefined : decodeManifest(row.manifest)
  }

  narSize (narHash: NixHash): number | undefined {
    return narHash.algorithm === 'sha256' ? this.index.narSize(narHash.digest) : undefined
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
      return await this.#read(id, row)
    } catch (err) {
      if (err instanceof IntegrityError) return undefined
      throw err
    }
  }

  async readStoredChunk (id: ChunkId, options?: AbortOptions): Promise<Uint8Array | undefined> {
    options?.signal?.throwIfAborted()
    const row = this.index.chunk(id)
    if (row === undefined) return undefined
    try {
      return await this.#checked(id, at => this.files.readStored(at), row)
    } catch (err) {
      if (err instanceof IntegrityError) return undefined
      throw err
    }
  }

  /** A verified chunk; a missing or corrupt one is dropped (with its NARs) and IntegrityError thrown. */
  async #read (id: Uint8Array, row?: ChunkRow): Promise<Uint8Array> {
    return await this.#checked(id, at => this.files.read(at), row)
  }

  /**
   * Reads a chunk where its index row says (`row`, when the caller looked it up already). The row
   * is looked up again once when its pack is gone: another process may have moved the chunk into
   * another pack (compaction) between the two.
   */
  async #checked<T> (id: Uint8Array, read: (at: ChunkAt) => T | undefined, row = this.index.chunk(id)): Promise<T> {
    const hex = hexOf(id)
    let why = 'its file is missing'
    try {
      for (let attempt = 0; ; attempt++) {
        if (row === undefined) { why = 'it is not in the index'; break }
        const bytes = read({ ...row, hex })
        if (bytes !== undefined) return bytes
        if (row.pack === undefined || attempt === 1) break
        row = this.index.chunk(id)
      }
    } catch (err) {
      if (!(err instanceof CorruptChunk)) throw err
      why = err.message
    }
    this.log.warn({ chunk: hex, why }, 'dropping a bad chunk and the NARs that need it')
    await this.maintenance.dropChunks([Buffer.from(hex, 'hex')])
    throw new IntegrityError(`chunk ${hex}: ${why}; the NARs that need it were dropped`)
  }

  render (narHash: NixHash, options?: AbortOptions): AsyncIterable<Uint8Array> | undefined {
    return this.#render(narHash, options?.signal, async (c, row) => await this.#read(c.id, row))
  }

  renderFrames (narHash: NixHash, options?: AbortOptions): AsyncIterable<ChunkFrames> | undefined {
    return this.#render(narHash, options?.signal, async (c, row) => ({ frames: await this.#checked(c.id, at => this.files.readFrames(at), row), size: c.size }))
  }

  /** `read` gets each chunk with its row as the render looked it up (undefined: look it up again). */
  #render<T> (narHash: NixHash, signal: AbortSignal | undefined, read: (c: ManifestChunk, row: ChunkRow | undefined) => Promise<T>): AsyncIterable<T> | undefined {
    const row = narHash.algorithm === 'sha256' ? this.index.nar(narHash.digest) : undefined
    if (row === undefined) { this.index.bump('misses'); return undefined }
    // One write transaction, not two: a render is on every NAR request's path.
    this.index.transaction(() => {
      this.index.bump('hits')
      this.index.touch(row.narHash, this.now())
    })
    const manifest = decodeManifest(row.manifest)
    // The lease is taken now, not when iteration starts, so eviction cannot slip in between.
    // A render that is never iterated must not keep the NAR forever.
    const lease = this.inUse.leaseFor(narHash.toBase16(), this.#freshLease)
    return {
      [Symbol.asyncIterator]: () => this.#renderChunks(manifest.chunks, signal, lease.keep(), read)
    }
  }

  async * #renderChunks<T> (chunks: ManifestChunk[], signal: AbortSignal | undefined, release: () => void, read: (c: ManifestChunk, row: ChunkRow | undefined) => Promise<T>): AsyncGenerator<T> {
    const queue: Array<Promise<T>> = []
    let next = 0
    // Rows are looked up ROWS_AT_ONCE chunks at a time. One that moved meanwhile (compaction by
    // another process) is found again by `#checked` once its pack is gone, and every chunk is
    // checked against its id or stored hash as it is read, wherever the row pointed.
    let rows = new Map<string, ChunkRow>()
    const fill = (): void => {
      while (queue.length < PREFETCH && next < chunks.length) {
        if (next % ROWS_AT_ONCE === 0) {
          rows = new Map(this.index.chunks(chunks.slice(next, next + ROWS_AT_ONCE).map(c => c.id)).map(r => [hexOf(r.id), r]))
        }
        const c = chunks[next++]!
        const p = read(c, rows.get(hexOf(c.id)))
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

  /**
   * Writes a chunk unless it is stored or being stored; true when this call wrote it. `written`:
   * see PutChunkOptions.onWritten.
   */
  async storeChunk (hex: string, id: Uint8Array, bytes: Uint8Array, compressed?: Uint8Array, written?: () => void): Promise<boolean> {
    const pending = this.#writing.get(hex)
    if (pending !== undefined) { written?.(); await pending; return false }
    if (this.index.hasChunk(id)) { written?.(); return false }
    const write = (async () => {
      const stored = await this.files.write(hex, bytes, compressed, written)
      // A record whose row fails stays in its pack as bytes no row names, reclaimed with the pack.
      try {
        await this.#addChunkRow({ id, size: bytes.length, stored })
      } catch (err) {
        throw storageError(`cannot index chunk ${hex}`, err)
      } finally {
        this.files.indexed(stored.pack)
      }
    })()
    this.#writing.set(hex, write)
    const done = (): void => { this.#writing.delete(hex) }
    write.then(done, done)
    await write
    return true
  }

  /**
   * Adds a chunk's index row together with the others whose files were written within ROW_DELAY_MS
   * (up to ROW_BATCH of them): one transaction for many rows costs about what one costs alone,
   * and a fill from peers writes its chunks a few at a time (one row a transaction made them
   * 5 % of a fill's time).
   */
  async #addChunkRow (row: PendingRow): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#rows.push({ ...row, resolve, reject })
      if (this.#rows.length >= ROW_BATCH) this.#flushRows()
      else this.#rowTimer ??= setTimeout(() => this.#flushRows(), ROW_DELAY_MS)
    })
  }

  #flushRows (): void {
    clearTimeout(this.#rowTimer)
    this.#rowTimer = undefined
    const rows = this.#rows.splice(0)
    if (rows.length === 0) return
    const now = this.now()
    try {
      this.index.transaction(() => { for (const r of rows) this.index.addChunk(r.id, r.size, r.stored.storedSize, now, r.stored.storedHash, r.stored.pack, r.stored.offset) })
    } catch (err) {
      for (const r of rows) r.reject(err as Error)
      return
    }
    for (const r of rows) r.resolve()
  }

  async ingest (expected: NarIdentity, body: AsyncIterable<Uint8Array>, options?: IngestOptions): Promise<Manifest> {
    return await ingestNar(this, expected, body, options)
  }

  async putChunk (id: ChunkId, bytes: Uint8Array, options?: PutChunkOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    const hex = hexOf(id)
    if (hexOf(chunkIdOf(bytes)) !== hex) throw new IntegrityError(`chunk bytes do not hash to ${hex}`)
    await this.storeChunk(hex, id, bytes, options?.compressed, options?.onWritten)
  }

  async commitManifest (manifest: Manifest, expected: NarIdentity, options?: AbortOptions & { narHashChecked?: boolean }): Promise<void> {
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
    for (const hex of hexes) this.inUse.hold(hex)
    try {
      const missing = checked.chunks.filter(c => !this.index.hasChunk(c.id)).length
      if (missing > 0) throw new IntegrityError(`${missing} of ${checked.chunks.length} chunks of ${expected.narHash.toString()} are not stored`)
      if (options?.narHashChecked === true) { this.commitVerified(checked, expected.storePath); return }
      // The whole NAR is hashed, so each chunk need not be: any wrong byte fails the NarHash. Only
      // then is each chunk checked, so that a corrupt stored one is dropped, not blamed on the manifest.
      const hasher = createHash(expected.narHash.algorithm)
      for (const c of checked.chunks) {
        options?.signal?.throwIfAborted()
        const row = this.index.chunk(c.id)
        let bytes: Uint8Array | undefined
        try {
          if (row !== undefined) bytes = this.files.read({ ...row, hex: hexOf(c.id) }, false)
        } catch (err) {
          if (!(err instanceof CorruptChunk)) throw err
        }
        hasher.update(bytes ?? await this.#read(c.id, row))
      }
      const digest = hasher.digest()
      if (!digest.equals(expected.narHash.digest)) {
        for (const c of checked.chunks) await this.#read(c.id)
        throw new IntegrityError(`chunks of the manifest hash to ${digest.toString('hex')}, expected ${expected.narHash.toString()}`)
      }
      this.commitVerified(checked, expected.storePath)
    } finally {
      for (const hex of hexes) this.inUse.unhold(hex)
    }
  }

  /** Commits a manifest whose chunks are stored and whose NAR was verified; returns the one that won. */
  commitVerified (manifest: Manifest, storePath: string | undefined): Manifest {
    const key = manifest.narHash.digest
    const refs = chunkRefs(manifest)
    let winner: Manifest | undefined
    try {
      this.index.transaction(() => {
        const row = this.index.nar(key)
        if (row !== undefined) winner = decodeManifest(row.manifest)
        else {
          for (const [hex, { id, n }] of refs) {
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
    this.inUse.leaseFor(manifest.narHash.toBase16(), this.#freshLease)
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

  /**
   * Whether maintenance may remove or compact a pack: no process writes into it any more, and no
   * row for a record in it is still to be committed here.
   */
  reclaimable (pack: { id: number, owner: string | undefined }): boolean {
    if (pack.owner === undefined) return true
    return pack.owner === this.owner && !this.files.isOpen(pack.id)
  }

  /** Pins (or unpins) a NAR: eviction skips pinned NARs. False when the store does not hold it. */
  pin (narHash: NixHash, pinned = true): boolean {
    return narHash.algorithm === 'sha256' && this.index.setPinned(narHash.digest, pinned)
  }

  stats (): StoreStats { return this.maintenance.stats() }
  async verify (): Promise<VerifyReport> { return await this.maintenance.verify() }
  async gc (): Promise<CheckReport & { evicted: number }> { return await this.maintenance.gc() }

  onCommit (listener: (nar: CommittedNar) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.inUse.close()
    await Promise.allSettled(this.#writing.values())
    await this.maintenance.idle()
    await this.files.close()
    try {
      this.index.releasePacks(this.owner)
    } catch (err) {
      this.log.warn({ err }, 'chunk store: could not release its packs; the next start-up check will')
    }
  }
}
