/**
 * Chunk records appended to pack files (`chunks/packs/<id>.pack`) on libuv's thread pool. A record
 * is what a chunk file of its own holds (chunk-file.ts: a header byte, then the bytes raw or as one
 * zstd frame), so a pack is those records back to back and the index says where each one starts.
 * One file for many chunks: creating, syncing and renaming a file for every 64 KiB chunk was the
 * store's largest cost on an ordinary disk (bench/README.md), where appending costs one positioned
 * write, shared by the records written in the same turn of the event loop. `write` resolves once
 * the record is durable: writes that finish while one fdatasync runs share the next one, so a
 * NAR's chunks take a few syncs, not one each. The caller commits the index row afterwards, so a
 * crash leaves at most bytes no row names, reclaimed with the pack.
 *
 * Each writer appends to a pack of its own (registered in the index, with its process as owner),
 * so two processes sharing a store never write into one file; a pack is sealed once it passes
 * `packBytes` or the writer closes. A record is encoded and copied into one of SLOTS buffers
 * allocated once, so the caller's buffer is free when `write` returns; when every slot is taken,
 * `write` waits for one (back-pressure).
 */
import { hash } from 'node:crypto'
import { close, fdatasync, open } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { writevAt } from '../util/writev-at.ts'
import { encodeChunk, ZSTD } from './chunk-file.ts'

const SLOT_SIZE = (256 << 10) + 64
const SLOTS = 8
/** A pack takes no new records once it is this large: eviction reclaims space a pack at a time. */
export const PACK_BYTES = 32 << 20

const openAsync = promisify(open)
const fdatasyncAsync = promisify(fdatasync)
const closeAsync = promisify(close)

/** Where a chunk's record went, what it takes on disk, and the hash its body is checked against when it is compressed. */
export interface StoredChunk {
  storedSize: number
  storedHash: Uint8Array | undefined
  pack: number
  offset: number
}

/** The index's side of packs: a new pack's id, and a pack that takes no more records, with its final length. */
export interface PackRegistry {
  create: () => number
  seal: (id: number, bytes: number) => void
}

export function packPath (dir: string, id: number): string {
  return join(dir, `${id}.pack`)
}

interface OpenPack {
  id: number
  fd: number
  /** Where the next record goes (space is taken before the write lands). */
  end: number
  writes: Set<Promise<unknown>>
  /** Records given room and not yet landed (their writes may not have started). */
  reserved: number
  dirty: boolean
  /** The fdatasync of this pack under way, which its seal waits for before closing the descriptor. */
  syncing: Promise<void> | undefined
  closed: boolean
  /** Records to be written by the next `#flushWrites`. */
  queued: QueuedWrite[]
}

interface QueuedWrite { record: Uint8Array, offset: number, resolve: () => void, reject: (err: unknown) => void }

export class PackWriter {
  readonly #dir: string
  readonly #fsync: boolean
  readonly #packBytes: number
  readonly #registry: PackRegistry
  readonly #free: Uint8Array[] = []
  readonly #inFlight = new Set<Promise<unknown>>()
  readonly #waiting: Array<() => void> = []
  readonly #open = new Set<OpenPack>()
  /** Records by pack that their callers have not reported `indexed` yet. */
  readonly #pending = new Map<number, number>()
  #active: OpenPack | undefined
  #opening: Promise<void> | undefined
  #slots = 0
  #closed = false
  /** The sync that runs now, and the next one, which writes finished meanwhile wait for. */
  #syncing: Promise<void> = Promise.resolve()
  #nextSync: Promise<void> | undefined

  constructor (options: { dir: string, fsync: boolean, registry: PackRegistry, packBytes?: number }) {
    this.#dir = options.dir
    this.#fsync = options.fsync
    this.#registry = options.registry
    this.#packBytes = options.packBytes ?? PACK_BYTES
  }

  /** The pack records go to now, if one is open. */
  get activePack (): number | undefined { return this.#active?.id }

  /**
   * Whether the pack is still this writer's: records may still be written into it, or a record in
   * it waits for its index row (`indexed`).
   */
  isOpen (id: number): boolean {
    if (this.#pending.has(id)) return true
    for (const pack of this.#open) if (pack.id === id) return true
    return false
  }

  /**
   * Writes a chunk's record; `compressed` (a checked zstd frame of `bytes`) is its body if given.
   * `written` is called once the record has landed, before it is durable.
   */
  async write (bytes: Uint8Array, compressed?: Uint8Array, written?: () => void): Promise<StoredChunk> {
    const { flag, body } = compressed === undefined ? encodeChunk(bytes) : { flag: ZSTD, body: compressed }
    // A compressed body is sent to Nix as it is stored (a zstd frame): this hash checks it on
    // reading without decompressing it. A raw body is checked against the chunk id itself.
    const storedHash = flag === ZSTD ? new Uint8Array(hash('sha256', body, 'buffer')) : undefined
    const at = await this.append(flag, body, written)
    return { storedSize: 1 + body.length, storedHash, ...at }
  }

  /** Appends one record, `flag` then `body`, and waits until it is durable; where it went. */
  async append (flag: number, body: Uint8Array, written?: () => void): Promise<{ pack: number, offset: number }> {
    if (this.#closed) throw new Error('the chunk store is closed')
    const done = this.#append(flag, body, written)
    this.#inFlight.add(done)
    try {
      return await done
    } finally {
      this.#inFlight.delete(done)
    }
  }

  async #append (flag: number, body: Uint8Array, written?: () => void): Promise<{ pack: number, offset: number }> {
    const length = 1 + body.length
    let slot = this.#take(length)
    // The caller may reuse its buffer as soon as `write` returns: kept while waiting for a slot.
    if (slot === undefined) body = new Uint8Array(body)
    while (slot === undefined) {
      await new Promise<void>(resolve => this.#waiting.push(resolve))
      slot = this.#take(length)
    }
    let at: { pack: OpenPack, offset: number }
    try {
      const record = slot.subarray(0, length)
      record[0] = flag
      record.set(body, 1)
      at = await this.#reserve(length)
      this.#pending.set(at.pack.id, (this.#pending.get(at.pack.id) ?? 0) + 1)
      const landed = this.#writeAll(at.pack, record, at.offset)
      at.pack.writes.add(landed)
      try {
        await landed
      } catch (err) {
        this.indexed(at.pack.id)
        throw err
      } finally {
        at.pack.writes.delete(landed)
        at.pack.reserved--
      }
    } finally {
      if (slot.length === SLOT_SIZE) { this.#free.push(slot); this.#waiting.shift()?.() }
    }
    written?.()
    try {
      await this.#durable()
    } catch (err) {
      this.indexed(at.pack.id)
      throw err
    }
    return { pack: at.pack.id, offset: at.offset }
  }

  /**
   * The caller is done with a record `write` or `append` gave it: its index row is committed (or
   * failed). Until then the pack counts as open, so that no one reclaims it under the row.
   */
  indexed (id: number): void {
    const n = (this.#pending.get(id) ?? 0) - 1
    if (n > 0) this.#pending.set(id, n)
    else this.#pending.delete(id)
  }

  /**
   * Writes a record where it was given room, together with the others queued in the same turn of
   * the event loop: records that follow each other in the pack go out in one `pwritev`. Every
   * write is a round trip through the thread pool, whose wake-ups cost the event loop about a
   * tenth of a fill from peers when each record went alone (bench/README.md).
   */
  async #writeAll (pack: OpenPack, record: Uint8Array, offset: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      if (pack.queued.push({ record, offset, resolve, reject }) === 1) setImmediate(() => { void this.#flushWrites(pack) })
    })
  }

  async #flushWrites (pack: OpenPack): Promise<void> {
    const writes = pack.queued.splice(0).sort((a, b) => a.offset - b.offset)
    for (let i = 0; i < writes.length;) {
      let j = i + 1
      let end = writes[i]!.offset + writes[i]!.record.length
      while (j < writes.length && writes[j]!.offset === end) end += writes[j++]!.record.length
      const run = writes.slice(i, j)
      i = j
      try {
        await writevAt(pack.fd, run.map(w => w.record), run[0]!.offset)
        pack.dirty = true
        for (const w of run) w.resolve()
      } catch (err) {
        for (const w of run) w.reject(err)
      }
    }
  }

  /** A buffer for `length` bytes: a free slot, a new one while there are fewer than SLOTS. */
  #take (length: number): Uint8Array | undefined {
    if (length > SLOT_SIZE) return new Uint8Array(length)
    const slot = this.#free.pop()
    if (slot !== undefined) return slot
    if (this.#slots >= SLOTS) return undefined
    this.#slots++
    return new Uint8Array(SLOT_SIZE)
  }

  /**
   * Room for `length` bytes in the active pack (a fresh pack takes a record of any size), taken in
   * the same step as the pack is chosen, so that no seal comes in between.
   */
  async #reserve (length: number): Promise<{ pack: OpenPack, offset: number }> {
    for (;;) {
      const pack = this.#active
      if (pack !== undefined && (pack.end === 0 || pack.end + length <= this.#packBytes)) {
        const offset = pack.end
        pack.end += length
        pack.reserved++
        return { pack, offset }
      }
      this.#opening ??= this.#rotate().finally(() => { this.#opening = undefined })
      await this.#opening
    }
  }

  async #rotate (): Promise<void> {
    const old = this.#active
    const id = this.#registry.create()
    const fd = await openAsync(packPath(this.#dir, id), 'wx')
    const pack: OpenPack = { id, fd, end: 0, writes: new Set(), reserved: 0, dirty: false, syncing: undefined, closed: false, queued: [] }
    this.#open.add(pack)
    this.#active = pack
    if (old !== undefined) void this.#seal(old).catch(() => {})
  }

  /** Seals a pack once its last writes landed and were synced. */
  async #seal (pack: OpenPack): Promise<void> {
    // A record given room just before the seal may start its write a moment later.
    while (pack.reserved > 0) await Promise.allSettled([...pack.writes, new Promise(resolve => setImmediate(resolve))])
    try {
      if (this.#fsync) await this.#syncPack(pack)
      this.#registry.seal(pack.id, pack.end)
    } finally {
      this.#open.delete(pack)
      // A shared sync may have started on this pack meanwhile: the descriptor stays open until it is done.
      while (pack.syncing !== undefined) await pack.syncing.catch(() => {})
      pack.closed = true
      await closeAsync(pack.fd).catch(() => {})
    }
  }

  /**
   * Makes what landed in `pack` durable: waits for a sync of it under way, then syncs it if written
   * to since. One sync a pack at a time, so that a seal knows when its descriptor is free to close.
   */
  async #syncPack (pack: OpenPack): Promise<void> {
    while (pack.syncing !== undefined) await pack.syncing.catch(() => {})
    if (!pack.dirty) return
    // Its seal failed to sync it and closed it: these records are not durable.
    if (pack.closed) throw Object.assign(new Error(`pack ${pack.id} was closed before its records were synced`), { code: 'EIO' })
    pack.dirty = false
    const sync = fdatasyncAsync(pack.fd)
    pack.syncing = sync
    try {
      await sync
    } catch (err) {
      pack.dirty = true
      throw err
    } finally {
      pack.syncing = undefined
    }
  }

  /**
   * Waits for an fdatasync that starts after this call: every write that landed before it is then
   * durable. Writes landing while a sync runs share the next one.
   */
  async #durable (): Promise<void> {
    if (!this.#fsync) return
    this.#nextSync ??= (async () => {
      await this.#syncing.catch(() => {})
      this.#nextSync = undefined
      this.#syncing = this.#syncDirty()
      await this.#syncing
    })()
    await this.#nextSync
  }

  async #syncDirty (): Promise<void> {
    // A snapshot: a pack that its seal takes out of the set meanwhile is synced, or found synced,
    // before its descriptor closes (#seal waits for the sync under way).
    for (const pack of [...this.#open]) await this.#syncPack(pack)
  }

  /**
   * Seals the active pack if no write is under way in it, so that it can be reclaimed as any
   * other (every record in it was dropped); the next write opens a new one. True when it did.
   */
  async retire (id: number): Promise<boolean> {
    const pack = this.#active
    if (pack === undefined || pack.id !== id || pack.reserved > 0 || this.#pending.has(id) || this.#opening !== undefined) return false
    this.#active = undefined
    await this.#seal(pack)
    return true
  }

  /** Waits for the writes asked for and seals the open packs; later writes are refused. */
  async close (): Promise<void> {
    this.#closed = true
    await Promise.allSettled(this.#inFlight)
    await this.#opening?.catch(() => {})
    this.#active = undefined
    await Promise.allSettled([...this.#open].map(async pack => await this.#seal(pack)))
  }
}
