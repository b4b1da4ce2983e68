/**
 * Keeping packs in order: the start-up check of pack files against the index, and reclaiming the
 * space of records no row names any more (chunks evicted or dropped). A pack is removed whole once
 * none of its records is used; above the cap, the packs with the most unused bytes are compacted
 * first: their used records are copied into the active pack, the rows pointed at the copies in one
 * transaction, and only then is the old pack removed. A reader in this process looks a row up and
 * reads it in one synchronous step, so it finds either the old place or the new one, both whole;
 * one in another process looks the row up again when the pack it was told of is gone
 * (store.ts). Only packs no process writes into are touched (`LocalChunkStore.reclaimable`).
 */
import { runs } from '../util/process.ts'
import { CorruptChunk, hexOf } from './files.ts'
import type { LocalChunkStore } from './store.ts'

/** Copies in flight while compacting a pack (their syncs are shared). */
const COPIES_IN_FLIGHT = 8

/**
 * Pack files against the index: a pack whose writer is gone is released; the rows of records its
 * file does not hold (missing, cut short by a crash) are returned, to be dropped; its length is
 * set to its file's, so bytes written but never indexed count until the pack is reclaimed. A pack
 * file the index does not name is removed at once: its row is made before the file, and deleted
 * before it. `removed` counts those files.
 */
export async function checkPacks (store: LocalChunkStore): Promise<{ missing: Uint8Array[], removed: number, forgotten: number[], strays: string[] }> {
  const { files, index } = store
  // Files first, then rows: a pack made meanwhile shows as a row without its file, whose owner runs.
  const { packs: onDisk, strays } = await files.listPacks()
  const missing: Uint8Array[] = []
  const forgotten: number[] = []
  for (const pack of index.packs()) {
    const size = onDisk.get(pack.id)
    onDisk.delete(pack.id)
    if (pack.owner !== undefined && runs(pack.owner)) continue
    if (size === undefined) {
      for (const row of index.packChunks(pack.id)) missing.push(row.id)
      forgotten.push(pack.id)
      continue
    }
    // Every row ends within the pack's recorded length: only a file shorter than that can lack one.
    if (size < pack.bytes) for (const row of index.packChunks(pack.id)) if (row.offset + row.storedSize > size) missing.push(row.id)
    if (pack.owner !== undefined || pack.bytes !== size) index.setPack(pack.id, size, undefined)
  }
  let removed = 0
  for (const id of onDisk.keys()) { files.removePack(id); removed++ }
  return { missing, removed, forgotten, strays }
}

/**
 * Gives back the space of unused records: packs none of whose records is used are removed (the
 * active one of this store too, once idle); then, while the store is above `target` bytes, the
 * packs with the most unused bytes are compacted, so that each copy gives back as much as it
 * can. Returns the packs removed.
 */
export async function reclaimPacks (store: LocalChunkStore, target: number): Promise<number> {
  const { files, index } = store
  let removed = 0
  // The active pack is sealed (when idle) once it holds unused records that count: entirely
  // unused, or the store is above its target; the next record opens a new one.
  const active = files.activePack
  let uses = index.packs()
  const current = uses.find(p => p.id === active)
  if (active !== undefined && current !== undefined && current.bytes > current.live && (current.live === 0 || index.storedBytes() > target)) {
    if (await files.retire(active)) uses = index.packs()
  }
  const candidates = uses.filter(p => store.reclaimable(p))
  for (const pack of candidates.filter(p => p.live === 0)) {
    removePack(store, pack.id)
    removed++
  }
  const partial = candidates.filter(p => p.live > 0 && p.bytes > p.live).sort((a, b) => (b.bytes - b.live) - (a.bytes - a.live))
  for (const pack of partial) {
    if (index.storedBytes() <= target) break
    await compact(store, pack.id)
    removed++
  }
  return removed
}

function removePack (store: LocalChunkStore, id: number): void {
  // The row goes first: a crash in between leaves a file the start-up check removes.
  store.index.deletePack(id)
  store.files.removePack(id)
}

/** Copies the used records of a pack into the active pack, points their rows there, removes it. */
async function compact (store: LocalChunkStore, id: number): Promise<void> {
  const { files, index } = store
  const bad: Uint8Array[] = []
  const moves: Array<{ id: Uint8Array, storedSize: number, to: { pack: number, offset: number } }> = []
  const inFlight = new Set<Promise<void>>()
  let failure: unknown
  try {
    for (const row of index.packChunks(id)) {
      let record: Uint8Array | undefined
      try {
        record = files.readStored({ ...row, hex: hexOf(row.id) })
      } catch (err) {
        if (!(err instanceof CorruptChunk)) throw err
      }
      if (record === undefined) { bad.push(row.id); continue }
      const copy = files.copyRecord(record).then(to => { moves.push({ id: row.id, storedSize: row.storedSize, to }) }, (err: unknown) => { failure ??= err })
      inFlight.add(copy)
      void copy.then(() => inFlight.delete(copy))
      if (inFlight.size >= COPIES_IN_FLIGHT) await Promise.race(inFlight)
      if (failure !== undefined) throw failure
    }
    await Promise.all(inFlight)
    if (failure !== undefined) throw failure
    if (bad.length > 0) {
      store.log.warn({ pack: id, chunks: bad.length }, 'dropping chunks a pack does not hold intact, and the NARs that need them')
      await store.maintenance.dropChunks(bad)
    }
    index.transaction(() => {
      for (const m of moves) index.moveChunk(m.id, id, m.to.pack, m.to.offset, m.storedSize)
    })
  } finally {
    // Copies that landed and were not indexed (a failure) stay as unused bytes of the active pack.
    await Promise.allSettled(inFlight)
    for (const m of moves) files.indexed(m.to.pack)
  }
  // Rows changed meanwhile (dropped, stored again elsewhere) were left as they are; any row still
  // naming this pack now is one the copy missed, and the pack stays.
  if (index.packChunks(id).length === 0) removePack(store, id)
}
