/**
 * The narinfo cache: what each upstream said about a store-path hash, kept in SQLite so a restart
 * does not re-ask, and indexed by NarHash so that `GET /nar/<narHash>.nar` can find where the NAR
 * lives. A positive entry keeps the upstream's narinfo text exactly as received (signatures
 * verified before it got here); a negative entry records that every upstream said 404/403.
 *
 * Positive entries live `positiveTtl` (default 30 days, the same as Nix's own narinfo cache, so a
 * NAR URL that Nix still holds in its cache stays servable); negative ones `negativeTtl`.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'

export type CachedNarInfo =
  | { present: true, text: string, upstream: string, fetchedAt: number, expiresAt: number }
  | { present: false, fetchedAt: number, expiresAt: number }

export interface NarInfoCacheInit {
  positiveTtl: number
  negativeTtl: number
  now?: () => number
}

export class NarInfoCache {
  readonly #positiveTtl: number
  readonly #negativeTtl: number
  readonly #now: () => number
  readonly #get: StatementSync
  readonly #byNarHash: StatementSync
  readonly #put: StatementSync
  readonly #purge: StatementSync
  readonly #present: StatementSync
  readonly #dropByNarHash: StatementSync

  constructor (db: DatabaseSync, init: NarInfoCacheInit) {
    this.#positiveTtl = init.positiveTtl
    this.#negativeTtl = init.negativeTtl
    this.#now = init.now ?? Date.now
    db.exec(`CREATE TABLE IF NOT EXISTS narinfo (
      hash_part  TEXT PRIMARY KEY,
      present    INTEGER NOT NULL,
      nar_hash   TEXT,
      text       TEXT,
      upstream   TEXT,
      fetched_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX IF NOT EXISTS narinfo_nar_hash ON narinfo (nar_hash) WHERE present = 1;`)
    this.#get = db.prepare('SELECT present, text, upstream, fetched_at FROM narinfo WHERE hash_part = ?')
    this.#byNarHash = db.prepare('SELECT text, upstream FROM narinfo WHERE nar_hash = ? AND present = 1 AND fetched_at > ? ORDER BY fetched_at DESC')
    this.#put = db.prepare(`INSERT INTO narinfo (hash_part, present, nar_hash, text, upstream, fetched_at) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (hash_part) DO UPDATE SET present = excluded.present, nar_hash = excluded.nar_hash, text = excluded.text,
      upstream = excluded.upstream, fetched_at = excluded.fetched_at`)
    this.#present = db.prepare('SELECT text FROM narinfo WHERE present = 1 AND fetched_at > ?')
    this.#dropByNarHash = db.prepare('DELETE FROM narinfo WHERE nar_hash = ? AND present = 1 RETURNING hash_part')
    this.#purge = db.prepare('DELETE FROM narinfo WHERE (present = 1 AND fetched_at <= ?) OR (present = 0 AND fetched_at <= ?)')
  }

  /** The live entry for a hash part, or undefined when there is none or it has expired. */
  get (hashPart: string): CachedNarInfo | undefined {
    const row = this.#get.get(hashPart) as { present: number, text: string | null, upstream: string | null, fetched_at: number } | undefined
    if (row === undefined) return undefined
    const age = this.#now() - row.fetched_at
    if (row.present === 1) {
      if (age >= this.#positiveTtl) return undefined
      return { present: true, text: row.text!, upstream: row.upstream!, fetchedAt: row.fetched_at, expiresAt: row.fetched_at + this.#positiveTtl }
    }
    if (age >= this.#negativeTtl) return undefined
    return { present: false, fetchedAt: row.fetched_at, expiresAt: row.fetched_at + this.#negativeTtl }
  }

  /** Live positive entries whose NarHash (nix32 sha256) is `narHash`, newest first. */
  findByNarHash (narHash: string): Array<{ text: string, upstream: string }> {
    const rows = this.#byNarHash.all(narHash, this.#now() - this.#positiveTtl) as Array<{ text: string, upstream: string }>
    return rows.map(r => ({ text: r.text, upstream: r.upstream }))
  }

  /** The text of every live positive entry, one at a time (for scans over everything held). */
  * presentTexts (): Generator<string> {
    for (const row of this.#present.iterate(this.#now() - this.#positiveTtl)) yield (row as { text: string }).text
  }

  /** Stores a positive entry; returns when it expires. */
  putPresent (hashPart: string, narHash: string, text: string, upstream: string): number {
    const now = this.#now()
    this.#put.run(hashPart, 1, narHash, text, upstream, now)
    return now + this.#positiveTtl
  }

  /** Stores a negative entry; returns when it expires. */
  putAbsent (hashPart: string): number {
    const now = this.#now()
    this.#put.run(hashPart, 0, null, null, null, now)
    return now + this.#negativeTtl
  }

  /**
   * Deletes every positive entry naming this NarHash (nix32), e.g. when no source has the NAR any
   * more; returns their hash parts.
   */
  dropByNarHash (narHash: string): string[] {
    return (this.#dropByNarHash.all(narHash) as Array<{ hash_part: string }>).map(r => r.hash_part)
  }

  /** Deletes expired entries; returns how many. */
  purgeExpired (): number {
    const now = this.#now()
    return Number(this.#purge.run(now - this.#positiveTtl, now - this.#negativeTtl).changes)
  }
}
