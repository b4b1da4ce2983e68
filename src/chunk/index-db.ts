/**
 * The chunk store's index, in the state database: which NARs are committed (NarHash → manifest,
 * size, store paths, last access, pin), which chunks are on disk (id → size, bytes on disk, where
 * they are, how many manifest entries use it, the SHA-256 of a compressed record's body) and the
 * pack files that hold them (id → bytes written, the process appending to it). A chunk row is
 * written only after its bytes are durable, and a NAR row, with the reference counts it adds, in
 * one transaction after all its chunk rows: so the index never names a NAR whose bytes were not
 * all durable first. A chunk row without a pack is a chunk in a file of its own, as stores made
 * before packs keep them.
 *
 * A chunk with no references is either being used by a NAR still in flight (an ingest, a peer
 * fill) or left over; it is removed once it is older than the orphan grace period.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'

export interface NarRow {
  narHash: Uint8Array
  narSize: number
  manifest: Uint8Array
  lastAccess: number
  pinned: boolean
}

export interface ChunkRow {
  size: number
  storedSize: number
  refcount: number
  /** SHA-256 of the file's body when it is stored compressed (absent in stores made before it was kept). */
  storedHash: Uint8Array | undefined
  /** The pack file holding it, and where; undefined for a chunk in a file of its own. */
  pack: number | undefined
  offset: number
}

export interface PackRow {
  id: number
  /** Bytes of the pack that committed chunk rows cover (at least). */
  bytes: number
  /** Bytes of its records that chunk rows still name. */
  live: number
  /** The store appending to it (`<pid>-<start time>-<random>`); undefined once it stopped. */
  owner: string | undefined
}

/** A chunk row with its id, as passes over the whole index see it. */
export interface ChunkEntry extends Omit<ChunkRow, 'refcount'> { id: Uint8Array }

/** Removes the chunk store's tables (to empty a store, whatever chunker made it). */
export function dropChunkTables (db: DatabaseSync): void {
  db.exec('DROP TABLE IF EXISTS nar_path; DROP TABLE IF EXISTS nar; DROP TABLE IF EXISTS chunk; DROP TABLE IF EXISTS chunk_pack; DROP TABLE IF EXISTS chunk_meta;')
}

/**
 * Bytes on disk: chunks in files of their own, plus whole packs, the bytes of chunks since
 * dropped included until their pack is compacted (maintenance.ts).
 */
const STORED = '((SELECT coalesce(sum(stored_size), 0) FROM chunk WHERE pack IS NULL) + (SELECT coalesce(sum(bytes), 0) FROM chunk_pack))'

type RawChunk = { id: Uint8Array, size: number, stored_size: number, stored_hash: Uint8Array | null, pack: number | null, pack_offset: number | null }

/** How many chunk rows `chunks` looks up in one statement. */
export const ROWS_AT_ONCE = 32

function entry (r: RawChunk): ChunkEntry {
  return { id: r.id, size: r.size, storedSize: r.stored_size, storedHash: r.stored_hash ?? undefined, pack: r.pack ?? undefined, offset: r.pack_offset ?? 0 }
}

export class ChunkIndex {
  readonly db: DatabaseSync
  readonly #s: Record<string, StatementSync>

  constructor (db: DatabaseSync) {
    this.db = db
    db.exec(`CREATE TABLE IF NOT EXISTS chunk_meta (key TEXT PRIMARY KEY, value ANY) STRICT;
    CREATE TABLE IF NOT EXISTS chunk (
      id          BLOB PRIMARY KEY,
      size        INTEGER NOT NULL,
      stored_size INTEGER NOT NULL,
      refcount    INTEGER NOT NULL,
      added_at    INTEGER NOT NULL,
      stored_hash BLOB
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS chunk_unreferenced ON chunk (added_at) WHERE refcount = 0;
    CREATE TABLE IF NOT EXISTS nar (
      nar_hash     BLOB PRIMARY KEY,
      nar_size     INTEGER NOT NULL,
      cdc_id       TEXT NOT NULL,
      manifest     BLOB NOT NULL,
      committed_at INTEGER NOT NULL,
      last_access  INTEGER NOT NULL,
      pinned       INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX IF NOT EXISTS nar_lru ON nar (last_access) WHERE pinned = 0;
    CREATE TABLE IF NOT EXISTS nar_path (
      store_path TEXT PRIMARY KEY,
      nar_hash   BLOB NOT NULL REFERENCES nar (nar_hash) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX IF NOT EXISTS nar_path_nar ON nar_path (nar_hash);
    CREATE TABLE IF NOT EXISTS chunk_pack (
      id    INTEGER PRIMARY KEY AUTOINCREMENT,
      bytes INTEGER NOT NULL,
      live  INTEGER NOT NULL DEFAULT 0,
      owner TEXT
    ) STRICT;`)
    // Stores made before stored_hash existed: their compressed chunks have none, and are checked
    // by decompressing them, as they always were. Stores made before packs: their chunks keep
    // their own files (pack NULL), read as before.
    const columns = db.prepare('SELECT name FROM pragma_table_info(\'chunk\')').all() as Array<{ name: string }>
    if (!columns.some(c => c.name === 'stored_hash')) db.exec('ALTER TABLE chunk ADD COLUMN stored_hash BLOB')
    if (!columns.some(c => c.name === 'pack')) db.exec('ALTER TABLE chunk ADD COLUMN pack INTEGER; ALTER TABLE chunk ADD COLUMN pack_offset INTEGER')
    // A pack's bytes in use are kept up to date by the database itself, whatever statement
    // changes a chunk row: summing them over a store's 160,000 rows took half a second, on every
    // eviction. The bytes of chunks in files of their own are summed over a partial index, empty
    // in stores made since packs.
    db.exec(`CREATE INDEX IF NOT EXISTS chunk_by_pack ON chunk (pack) WHERE pack IS NOT NULL;
    CREATE INDEX IF NOT EXISTS chunk_own_file ON chunk (stored_size) WHERE pack IS NULL;
    CREATE TRIGGER IF NOT EXISTS chunk_pack_added AFTER INSERT ON chunk WHEN new.pack IS NOT NULL
      BEGIN UPDATE chunk_pack SET live = live + new.stored_size WHERE id = new.pack; END;
    CREATE TRIGGER IF NOT EXISTS chunk_pack_removed AFTER DELETE ON chunk WHEN old.pack IS NOT NULL
      BEGIN UPDATE chunk_pack SET live = live - old.stored_size WHERE id = old.pack; END;
    CREATE TRIGGER IF NOT EXISTS chunk_pack_moved AFTER UPDATE OF pack, stored_size ON chunk
      BEGIN
        UPDATE chunk_pack SET live = live - old.stored_size WHERE id = old.pack;
        UPDATE chunk_pack SET live = live + new.stored_size WHERE id = new.pack;
      END;`)
    const sql: Record<string, string> = {
      getMeta: 'SELECT value FROM chunk_meta WHERE key = ?',
      setMeta: 'INSERT INTO chunk_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      bump: 'INSERT INTO chunk_meta (key, value) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1',
      chunk: 'SELECT size, stored_size, refcount, stored_hash, pack, pack_offset FROM chunk WHERE id = ?',
      hasChunk: 'SELECT 1 FROM chunk WHERE id = ?',
      chunks: `SELECT id, size, stored_size, refcount, stored_hash, pack, pack_offset FROM chunk WHERE id IN (${Array(ROWS_AT_ONCE).fill('?').join(', ')})`,
      addChunk: `INSERT INTO chunk (id, size, stored_size, refcount, added_at, stored_hash, pack, pack_offset) VALUES (?, ?, ?, 0, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET stored_size = excluded.stored_size, added_at = excluded.added_at, stored_hash = excluded.stored_hash,
        pack = excluded.pack, pack_offset = excluded.pack_offset`,
      growPack: 'UPDATE chunk_pack SET bytes = max(bytes, ?) WHERE id = ?',
      ref: 'UPDATE chunk SET refcount = refcount + ? WHERE id = ?',
      refcount: 'SELECT refcount FROM chunk WHERE id = ?',
      deleteChunk: 'DELETE FROM chunk WHERE id = ? RETURNING pack',
      newPack: 'INSERT INTO chunk_pack (bytes, owner) VALUES (0, ?) RETURNING id',
      setPack: 'UPDATE chunk_pack SET bytes = ?, owner = ? WHERE id = ?',
      releasePacks: 'UPDATE chunk_pack SET owner = NULL WHERE owner = ?',
      deletePack: 'DELETE FROM chunk_pack WHERE id = ?',
      packs: 'SELECT id, bytes, live, owner FROM chunk_pack ORDER BY id',
      packChunks: 'SELECT id, size, stored_size, stored_hash, pack, pack_offset FROM chunk WHERE pack = ? ORDER BY pack_offset',
      moveChunk: 'UPDATE chunk SET pack = ?, pack_offset = ? WHERE id = ? AND pack = ?',
      narSize: 'SELECT nar_size FROM nar WHERE nar_hash = ?',
      nar: 'SELECT nar_hash, nar_size, manifest, last_access, pinned FROM nar WHERE nar_hash = ?',
      addNar: 'INSERT INTO nar (nar_hash, nar_size, cdc_id, manifest, committed_at, last_access) VALUES (?, ?, ?, ?, ?, ?)',
      deleteNar: 'DELETE FROM nar WHERE nar_hash = ?',
      touch: 'UPDATE nar SET last_access = ? WHERE nar_hash = ?',
      pin: 'UPDATE nar SET pinned = ? WHERE nar_hash = ?',
      addPath: 'INSERT INTO nar_path (store_path, nar_hash) VALUES (?, ?) ON CONFLICT (store_path) DO UPDATE SET nar_hash = excluded.nar_hash',
      byPath: 'SELECT nar_hash FROM nar_path WHERE store_path = ?',
      paths: 'SELECT store_path FROM nar_path WHERE nar_hash = ? ORDER BY store_path',
      lru: 'SELECT nar_hash FROM nar WHERE pinned = 0 ORDER BY last_access, nar_hash',
      allNars: 'SELECT nar_hash, manifest FROM nar',
      chunksIn: 'SELECT id, size, stored_size, stored_hash, pack, pack_offset FROM chunk WHERE id >= ? AND id < ?',
      orphans: 'SELECT id FROM chunk WHERE refcount = 0 AND added_at <= ?',
      storedBytes: `SELECT ${STORED} AS n`,
      ownFileChunks: 'SELECT count(*) AS n FROM chunk WHERE pack IS NULL',
      unusedBytes: 'SELECT coalesce(sum(max(0, bytes - live)), 0) AS n FROM chunk_pack',
      totals: `SELECT (SELECT count(*) FROM nar) AS nars, (SELECT coalesce(sum(nar_size), 0) FROM nar) AS logical,
        (SELECT count(*) FROM nar WHERE pinned = 1) AS pinned, (SELECT count(*) FROM chunk) AS chunks,
        (SELECT coalesce(sum(size), 0) FROM chunk) AS unique_bytes, ${STORED} AS stored`
    }
    this.#s = Object.fromEntries(Object.entries(sql).map(([k, v]) => [k, db.prepare(v)]))
  }

  #q (name: string): StatementSync { return this.#s[name]! }

  /** Runs `fn` in one write transaction (BEGIN IMMEDIATE: a second process waits its turn). */
  transaction<T> (fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE')
    try {
      const result = fn()
      this.db.exec('COMMIT')
      return result
    } catch (err) {
      this.db.exec('ROLLBACK')
      throw err
    }
  }

  meta (key: string): string | number | undefined {
    return (this.#q('getMeta').get(key) as { value: string | number } | undefined)?.value
  }

  setMeta (key: string, value: string | number): void { this.#q('setMeta').run(key, value) }
  bump (key: string): void { this.#q('bump').run(key) }

  chunk (id: Uint8Array): ChunkRow | undefined {
    const r = this.#q('chunk').get(id) as (RawChunk & { refcount: number }) | undefined
    if (r === undefined) return undefined
    const { id: _, ...row } = entry({ ...r, id })
    return { ...row, refcount: r.refcount }
  }

  hasChunk (id: Uint8Array): boolean { return this.#q('hasChunk').get(id) !== undefined }

  /**
   * The rows of up to ROWS_AT_ONCE chunks in one statement, in no particular order; a chunk with
   * no row has none. A render reads a NAR's rows this way: a statement per chunk cost a third of
   * rendering a stored NAR as zstd.
   */
  chunks (ids: readonly Uint8Array[]): Array<ChunkRow & { id: Uint8Array }> {
    if (ids.length > ROWS_AT_ONCE) throw new RangeError(`at most ${ROWS_AT_ONCE} chunk rows at once`)
    if (ids.length === 0) return []
    // One statement of a fixed arity, prepared once: a shorter batch repeats its first id.
    const args = [...ids]
    while (args.length < ROWS_AT_ONCE) args.push(ids[0]!)
    return (this.#q('chunks').all(...args) as Array<RawChunk & { refcount: number }>).map(r => ({ ...entry(r), refcount: r.refcount }))
  }

  /** A chunk whose bytes are durable: in a pack at `offset`, or (`pack` undefined) in a file of its own. */
  addChunk (id: Uint8Array, size: number, storedSize: number, now: number, storedHash?: Uint8Array, pack?: number, offset = 0): void {
    this.#q('addChunk').run(id, size, storedSize, now, storedHash ?? null, pack ?? null, pack === undefined ? null : offset)
    if (pack !== undefined) this.#q('growPack').run(offset + storedSize, pack)
  }

  /** Adds `delta` references; false when there is no such chunk. */
  ref (id: Uint8Array, delta: number): boolean { return Number(this.#q('ref').run(delta, id).changes) === 1 }
  refcount (id: Uint8Array): number | undefined { return (this.#q('refcount').get(id) as { refcount: number } | undefined)?.refcount }
  /** Deletes a chunk's row; 'file' when its bytes are in a file of their own (to be removed), 'pack' in a pack, undefined when there was no row. */
  deleteChunk (id: Uint8Array): 'file' | 'pack' | undefined {
    const r = this.#q('deleteChunk').get(id) as { pack: number | null } | undefined
    return r === undefined ? undefined : r.pack === null ? 'file' : 'pack'
  }

  newPack (owner: string): number { return Number((this.#q('newPack').get(owner) as { id: number }).id) }
  setPack (id: number, bytes: number, owner: string | undefined): void { this.#q('setPack').run(bytes, owner ?? null, id) }
  /** Counts `bytes` as the pack's length unless it is longer already. */
  growPack (id: number, bytes: number): void { this.#q('growPack').run(bytes, id) }
  /** Hands the packs of a process that stopped writing to whoever reclaims them. */
  releasePacks (owner: string): void { this.#q('releasePacks').run(owner) }
  deletePack (id: number): void { this.#q('deletePack').run(id) }
  packs (): PackRow[] {
    return (this.#q('packs').all() as Array<{ id: number, bytes: number, live: number, owner: string | null }>).map(r => ({ id: r.id, bytes: r.bytes, live: r.live, owner: r.owner ?? undefined }))
  }

  packChunks (pack: number): ChunkEntry[] { return (this.#q('packChunks').all(pack) as RawChunk[]).map(entry) }

  /** Points a chunk at its copy in another pack, unless its row changed meanwhile; false then. */
  moveChunk (id: Uint8Array, from: number, to: number, offset: number, storedSize: number): boolean {
    if (Number(this.#q('moveChunk').run(to, offset, id, from).changes) !== 1) return false
    this.#q('growPack').run(offset + storedSize, to)
    return true
  }

  narSize (narHash: Uint8Array): number | undefined {
    return (this.#q('narSize').get(narHash) as { nar_size: number } | undefined)?.nar_size
  }

  nar (narHash: Uint8Array): NarRow | undefined {
    const r = this.#q('nar').get(narHash) as { nar_hash: Uint8Array, nar_size: number, manifest: Uint8Array, last_access: number, pinned: number } | undefined
    return r === undefined ? undefined : { narHash: r.nar_hash, narSize: r.nar_size, manifest: r.manifest, lastAccess: r.last_access, pinned: r.pinned === 1 }
  }

  addNar (narHash: Uint8Array, narSize: number, cdcId: string, manifest: Uint8Array, now: number): void {
    this.#q('addNar').run(narHash, narSize, cdcId, manifest, now, now)
  }

  deleteNar (narHash: Uint8Array): void { this.#q('deleteNar').run(narHash) }
  touch (narHash: Uint8Array, now: number): void { this.#q('touch').run(now, narHash) }
  setPinned (narHash: Uint8Array, pinned: boolean): boolean { return Number(this.#q('pin').run(pinned ? 1 : 0, narHash).changes) === 1 }
  addPath (storePath: string, narHash: Uint8Array): void { this.#q('addPath').run(storePath, narHash) }
  narOfPath (storePath: string): Uint8Array | undefined { return (this.#q('byPath').get(storePath) as { nar_hash: Uint8Array } | undefined)?.nar_hash }
  pathsOf (narHash: Uint8Array): string[] { return (this.#q('paths').all(narHash) as Array<{ store_path: string }>).map(r => r.store_path) }

  /** Unpinned NARs, least recently used first. */
  * lru (): Iterable<Uint8Array> {
    for (const r of this.#q('lru').iterate()) yield (r as { nar_hash: Uint8Array }).nar_hash
  }

  allNars (): Array<{ narHash: Uint8Array, manifest: Uint8Array }> {
    return (this.#q('allNars').all() as Array<{ nar_hash: Uint8Array, manifest: Uint8Array }>).map(r => ({ narHash: r.nar_hash, manifest: r.manifest }))
  }

  /**
   * The chunks whose id starts with the byte `prefix`: one fan-out directory's worth, so that a
   * pass over every chunk holds a 256th of them at a time (a blob range on the primary key).
   */
  chunksIn (prefix: number): ChunkEntry[] {
    const upper = prefix < 255 ? Uint8Array.of(prefix + 1) : new Uint8Array(33).fill(255)
    return (this.#q('chunksIn').all(Uint8Array.of(prefix), upper) as RawChunk[]).map(entry)
  }

  orphans (addedBefore: number): Uint8Array[] {
    return (this.#q('orphans').all(addedBefore) as Array<{ id: Uint8Array }>).map(r => r.id)
  }

  storedBytes (): number { return Number((this.#q('storedBytes').get() as { n: number }).n) }
  /** Bytes of records in packs that no chunk row names any more. */
  unusedBytes (): number { return Number((this.#q('unusedBytes').get() as { n: number }).n) }
  /** How many chunks are in files of their own (stores made before packs). */
  ownFileChunks (): number { return Number((this.#q('ownFileChunks').get() as { n: number }).n) }

  totals (): { nars: number, logical: number, pinned: number, chunks: number, uniqueBytes: number, stored: number } {
    const r = this.#q('totals').get() as Record<string, number>
    return { nars: r.nars!, logical: r.logical!, pinned: r.pinned!, chunks: r.chunks!, uniqueBytes: r.unique_bytes!, stored: r.stored! }
  }
}
