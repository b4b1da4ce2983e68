/**
 * Keeping the chunk store consistent and within its cap: the start-up check (what a crash or a
 * full disk left behind), dropping NARs (eviction, a corrupt chunk), verification of every chunk,
 * garbage collection, pins and statistics.
 *
 * Order of removal is always index first, files after: a crash in between leaves a file the index
 * does not know, which the next start-up check deletes; never an index row without its file.
 * Eviction is LRU by NAR over the bytes on disk: it starts when the store is above its cap and
 * drops NARs, skipping pinned NARs and NARs in use (leased), until the bytes they leave in use
 * are at LOW_WATER of it; then packs.ts gives back the space of the records no longer used, as
 * far as the store needs to be under its cap.
 */
import { rm } from 'node:fs/promises'
import { CorruptChunk, FAN_OUT, hexOf } from './files.ts'
import { chunkRefs, decodeManifest } from './manifest.ts'
import { checkPacks, reclaimPacks } from './packs.ts'
import type { LocalChunkStore } from './store.ts'

const LOW_WATER = 0.9
const HANDLE_CHECK_MS = 60_000
/** A chunk file the index does not know is left this long: another process may be indexing it. */
const UNINDEXED_GRACE = 10 * 60_000

export interface StoreStats {
  nars: number
  pinned: number
  chunks: number
  /** Sum of the NarSizes of the NARs held. */
  logicalBytes: number
  /** Sum of the (uncompressed) sizes of the distinct chunks. */
  uniqueBytes: number
  /** Bytes on disk (compressed chunks plus headers, unused records in packs included). */
  storedBytes: number
  /** Bytes of records in packs that no chunk uses any more, until eviction or gc reclaims them. */
  unusedBytes: number
  /** logicalBytes / storedBytes. */
  dedupRatio: number
  capacity: number
  hits: number
  misses: number
}

export interface CheckReport {
  temps: number
  strays: number
  missingChunks: number
  unindexedFiles: number
  orphans: number
  droppedNars: number
}

export interface VerifyReport {
  chunks: number
  bad: string[]
  droppedNars: number
}

export class Maintenance {
  readonly #store: LocalChunkStore
  readonly capacity: number
  readonly #orphanGrace: number
  #evicting: Promise<void> = Promise.resolve()
  #scheduled = false
  #handlesCheckedAt = -Infinity

  constructor (store: LocalChunkStore, capacity: number, orphanGrace: number) {
    this.#store = store
    this.capacity = capacity
    this.#orphanGrace = orphanGrace
  }

  async startupCheck (): Promise<CheckReport> {
    const { files, index, log } = this.#store
    const report: CheckReport = { temps: await files.removeDeadTemps(), strays: 0, missingChunks: 0, unindexedFiles: 0, orphans: 0, droppedNars: 0 }
    const removeStrays = async (strays: string[]): Promise<void> => {
      for (const stray of strays) {
        if (await files.ageOf(stray) < UNINDEXED_GRACE) continue
        await rm(stray, { recursive: true, force: true })
        report.strays++
      }
    }
    const root = await files.rootEntries()
    await removeStrays(root.strays)
    const packs = await checkPacks(this.#store)
    await removeStrays(packs.strays)
    report.strays += packs.removed
    // Chunks in files of their own (stores made before packs), where there are any:
    // one fan-out directory at a time, against the index rows of its prefix: the check holds a
    // 256th of the store's names in memory, not all of them (a 10 GiB store has 160,000 chunks).
    // Rows before files: a row is written after its file, so a chunk another process stores
    // meanwhile shows as a young unindexed file (left alone), never as a row without its file.
    const missing: Uint8Array[] = packs.missing
    const ownFiles = index.ownFileChunks() > 0 || root.fanOut
    for (const [prefix, dir] of ownFiles ? FAN_OUT.entries() : []) {
      const rows = index.chunksIn(prefix)
      const { chunks: onDisk, strays } = await files.listDir(dir)
      await removeStrays(strays)
      for (const { id, pack } of rows) {
        if (pack === undefined && !onDisk.delete(hexOf(id))) missing.push(id)
      }
      for (const hex of onDisk) {
        if (await files.ageOf(files.path(hex)) < UNINDEXED_GRACE) continue
        await files.remove(hex)
        report.unindexedFiles++
      }
    }
    report.missingChunks = missing.length
    report.droppedNars = await this.dropChunks(missing)
    for (const id of packs.forgotten) index.deletePack(id)
    report.orphans = await this.removeOrphans()
    if (Object.values(report).some(n => n > 0)) log.info(report, 'chunk store start-up check repaired what a crash or failure left')
    return report
  }

  /** Removes chunks no NAR references that are older than the grace period and not held. */
  async removeOrphans (grace = this.#orphanGrace): Promise<number> {
    const ids = this.#store.index.orphans(this.#store.now() - grace)
    return (await this.removeUnreferenced(ids.map(hexOf))).length
  }

  /** Removes those of `hexes` that no NAR references and no NAR in flight holds. */
  async removeUnreferenced (hexes: string[]): Promise<string[]> {
    const { index, inUse, files } = this.#store
    const gone: string[] = []
    const ownFiles: string[] = []
    index.transaction(() => {
      for (const hex of hexes) {
        const id = Buffer.from(hex, 'hex')
        if (inUse.held(hex) || index.refcount(id) !== 0) continue
        if (index.deleteChunk(id) === 'file') ownFiles.push(hex)
        gone.push(hex)
      }
    })
    for (const hex of ownFiles) await files.remove(hex).catch(() => {})
    return gone
  }

  /** Drops chunks (missing or corrupt) and every NAR whose manifest needs one; returns how many NARs. */
  async dropChunks (ids: Uint8Array[]): Promise<number> {
    if (ids.length === 0) return 0
    const { index, files } = this.#store
    const bad = new Set(ids.map(hexOf))
    const nars = index.allNars().filter(n => decodeManifest(n.manifest).chunks.some(c => bad.has(hexOf(c.id))))
    let dropped = 0
    for (const n of nars) if (await this.dropNar(n.narHash, true) !== undefined) dropped++
    const ownFiles: string[] = []
    index.transaction(() => { for (const hex of bad) if (index.deleteChunk(Buffer.from(hex, 'hex')) !== 'pack') ownFiles.push(hex) })
    for (const hex of ownFiles) await files.remove(hex).catch(() => {})
    return dropped
  }

  /**
   * Removes a NAR and the chunks only it used; returns the bytes freed on disk (undefined when it
   * was not there). Unless `force`, a leased NAR stays.
   */
  async dropNar (narHash: Uint8Array, force = false): Promise<number | undefined> {
    const { index, inUse, files } = this.#store
    if (!force && inUse.leased(hexOf(narHash))) return undefined
    const freed: string[] = []
    let bytes = 0
    const found = index.transaction(() => {
      const row = index.nar(narHash)
      if (row === undefined) return false
      index.deleteNar(narHash)
      for (const [hex, { id, n }] of chunkRefs(decodeManifest(row.manifest))) {
        index.ref(id, -n)
        const chunk = index.chunk(id)
        if (chunk === undefined || chunk.refcount > 0 || inUse.held(hex)) continue
        bytes += chunk.storedSize
        if (index.deleteChunk(id) === 'file') freed.push(hex)
      }
      return true
    })
    for (const hex of freed) await files.remove(hex).catch(() => {})
    return found ? bytes : undefined
  }

  /** Before a NAR of `incoming` bytes comes in: evict so that it fits under the cap. */
  async makeRoom (incoming: number): Promise<void> {
    await this.#serialized(async () => { await this.#evict(incoming) })
  }

  /** Evicts soon (after commits and released leases), once however often it is asked. */
  scheduleEviction (): void {
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#serialized(async () => {
        // Read handles of packs another process removed (`narswarm cache gc`) would keep their
        // space; looked for once a minute at most, not at every commit.
        if (performance.now() - this.#handlesCheckedAt >= HANDLE_CHECK_MS) {
          this.#handlesCheckedAt = performance.now()
          this.#store.files.closeHandlesExcept(new Set(this.#store.index.packs().map(p => p.id)))
        }
        await this.#evict(0)
      }).catch((err: unknown) => this.#store.log.error({ err }, 'chunk store eviction failed'))
    })
  }

  async idle (): Promise<void> {
    while (this.#scheduled) await new Promise(resolve => setImmediate(resolve))
    await this.#evicting.catch(() => {})
  }

  async #serialized (fn: () => Promise<void>): Promise<void> {
    const run = this.#evicting.catch(() => {}).then(fn)
    this.#evicting = run
    await run
  }

  /**
   * Evicts least recently used NARs until the chunks in use leave room for `incoming` more bytes
   * below the low-water mark, then reclaims the pack space they left unused until `incoming` fits
   * under the cap: unused records may take the room between the two, so packs are compacted
   * only when they take more.
   */
  async #evict (incoming: number): Promise<number> {
    const { index, inUse } = this.#store
    const total = index.storedBytes()
    if (total + incoming <= this.capacity) return 0
    const target = Math.floor(this.capacity * LOW_WATER) - incoming
    let used = total - index.unusedBytes()
    let evicted = 0
    for (const narHash of [...index.lru()]) {
      if (used <= target) break
      if (inUse.leased(hexOf(narHash))) continue
      const freed = await this.dropNar(narHash)
      if (freed === undefined) continue
      used -= freed
      evicted++
    }
    const packs = await reclaimPacks(this.#store, this.capacity - incoming)
    if (evicted > 0 || packs > 0) this.#store.log.debug({ evicted, packs, bytes: index.storedBytes(), capacity: this.capacity }, 'chunk store evicted NARs')
    return evicted
  }

  /** Re-hashes every chunk; drops the bad ones and the NARs that need them. */
  async verify (): Promise<VerifyReport> {
    const { index, files } = this.#store
    const bad: Uint8Array[] = []
    let chunks = 0
    for (const prefix of FAN_OUT.keys()) {
      const rows = index.chunksIn(prefix)
      chunks += rows.length
      for (const row of rows) {
        const { id } = row
        try {
          if (!files.check({ ...row, hex: hexOf(id) })) bad.push(id)
        } catch (err) {
          if (!(err instanceof CorruptChunk)) throw err
          bad.push(id)
        }
      }
    }
    const droppedNars = await this.dropChunks(bad)
    return { chunks, bad: bad.map(hexOf), droppedNars }
  }

  /** Start-up check, eviction down to the cap, and every pack that holds unused records reclaimed. */
  async gc (): Promise<CheckReport & { evicted: number }> {
    const report = await this.startupCheck()
    let evicted = 0
    await this.#serialized(async () => {
      evicted = await this.#evict(0)
      await reclaimPacks(this.#store, 0)
    })
    return { ...report, evicted }
  }

  stats (): StoreStats {
    const t = this.#store.index.totals()
    const num = (key: string): number => Number(this.#store.index.meta(key) ?? 0)
    return {
      nars: t.nars,
      pinned: t.pinned,
      chunks: t.chunks,
      logicalBytes: t.logical,
      uniqueBytes: t.uniqueBytes,
      storedBytes: t.stored,
      unusedBytes: this.#store.index.unusedBytes(),
      dedupRatio: t.stored === 0 ? 1 : t.logical / t.stored,
      capacity: this.capacity,
      hits: num('hits'),
      misses: num('misses')
    }
  }
}
