/**
 * The narinfo cache: what each upstream said about a store-path hash, kept in SQLite so a restart
 * does not re-ask, and indexed by NarHash so that `GET /nar/<narHash>.nar` can find where the NAR
 * lives. A positive entry keeps the upstream's narinfo text exactly as received (signatures
 * verified before it got here); a negative entry records that every upstream said 404/403.
 *
 * Positive entries live `positiveTtl` (default 30 days, the same as Nix's own narinfo cache, so a
 * NAR URL that Nix still holds in its cache stays servable); negative ones `negativeTtl`.
 *
 * Rows are checked again as they are read (`check`): a row stored by an older narswarm that did not
 * know a rule yet is dropped, not served for the rest of its TTL. The database may refuse writes
 * (full or read-only disk, see `WriteGuard`): the cache then keeps what it could not store in a
 * bounded in-memory overlay, so a narinfo just handed to Nix still leads to its NAR, and tries the
 * database again on every write.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { silentLogger, type Logger } from '../log.ts'
import { WriteGuard } from './write-guard.ts'

export type CachedNarInfo =
  | { present: true, text: string, upstream: string, fetchedAt: number, expiresAt: number }
  | { present: false, fetchedAt: number, expiresAt: number }

export interface NarInfoCacheInit {
  positiveTtl: number
  negativeTtl: number
  now?: () => number
  log?: Logger
  /** Why a stored narinfo may no longer be used, or undefined when it may. */
  check?: (hashPart: string, text: string) => string | undefined
}

/** Entries kept in memory while the database refuses writes. */
const MAX_UNSAVED = 10_000

interface Row { hashPart: string, present: boolean, narHash: string | null, text: string | null, upstream: string | null, fetchedAt: number }

export class NarInfoCache {
  readonly #positiveTtl: number
  readonly #negativeTtl: number
  readonly #now: () => number
  readonly #log: Logger
  readonly #check: ((hashPart: string, text: string) => string | undefined) | undefined
  readonly #guard: WriteGuard
  /** Rows the database refused, by hash part, oldest first. */
  readonly #unsaved = new Map<string, Row>()
  readonly #get: StatementSync
  readonly #byNarHash: StatementSync
  readonly #put: StatementSync
  readonly #delete: StatementSync
  readonly #purge: StatementSync
  readonly #present: StatementSync
  readonly #dropByNarHash: StatementSync

  constructor (db: DatabaseSync, init: NarInfoCacheInit) {
    this.#positiveTtl = init.positiveTtl
    this.#negativeTtl = init.negativeTtl
    this.#now = init.now ?? Date.now
    this.#log = init.log ?? silentLogger()
    this.#check = init.check
    this.#guard = new WriteGuard({ what: 'narinfo cache', log: this.#log, now: this.#now })
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
    this.#byNarHash = db.prepare('SELECT hash_part, text, upstream FROM narinfo WHERE nar_hash = ? AND present = 1 AND fetched_at > ? ORDER BY fetched_at DESC')
    this.#put = db.prepare(`INSERT INTO narinfo (hash_part, present, nar_hash, text, upstream, fetched_at) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (hash_part) DO UPDATE SET present = excluded.present, nar_hash = excluded.nar_hash, text = excluded.text,
      upstream = excluded.upstream, fetched_at = excluded.fetched_at`)
    this.#present = db.prepare('SELECT text FROM narinfo WHERE present = 1 AND fetched_at > ?')
    this.#dropByNarHash = db.prepare('DELETE FROM narinfo WHERE nar_hash = ? AND present = 1 RETURNING hash_part')
    this.#delete = db.prepare('DELETE FROM narinfo WHERE hash_part = ?')
    this.#purge = db.prepare('DELETE FROM narinfo WHERE (present = 1 AND fetched_at <= ?) OR (present = 0 AND fetched_at <= ?)')
  }

  /** The live entry for a hash part, or undefined when there is none or it has expired. */
  get (hashPart: string): CachedNarInfo | undefined {
    const row = this.#unsaved.get(hashPart) ?? this.#guard.read(() => this.#readRow(hashPart), undefined)
    if (row === undefined) return undefined
    const age = this.#now() - row.fetchedAt
    if (row.present) {
      if (age >= this.#positiveTtl || !this.#usable(row.hashPart, row.text!)) return undefined
      return { present: true, text: row.text!, upstream: row.upstream!, fetchedAt: row.fetchedAt, expiresAt: row.fetchedAt + this.#positiveTtl }
    }
    if (age >= this.#negativeTtl) return undefined
    return { present: false, fetchedAt: row.fetchedAt, expiresAt: row.fetchedAt + this.#negativeTtl }
  }

  /** Live positive entries whose NarHash (nix32 sha256) is `narHash`, newest first. */
  findByNarHash (narHash: string): Array<{ text: string, upstream: string }> {
    const since = this.#now() - this.#positiveTtl
    const stored = this.#guard.read(() => this.#byNarHash.all(narHash, since) as Array<{ hash_part: string, text: string, upstream: string }>, [])
    const unsaved = [...this.#unsaved.values()].filter(r => r.present && r.narHash === narHash && r.fetchedAt > since).reverse()
    const rows = [
      ...unsaved.map(r => ({ hashPart: r.hashPart, text: r.text!, upstream: r.upstream! })),
      ...stored.filter(r => !this.#unsaved.has(r.hash_part)).map(r => ({ hashPart: r.hash_part, text: r.text, upstream: r.upstream }))
    ]
    return rows.filter(r => this.#usable(r.hashPart, r.text)).map(r => ({ text: r.text, upstream: r.upstream }))
  }

  /** The text of every live positive entry, one at a time (for scans over everything held). */
  * presentTexts (): Generator<string> {
    for (const row of this.#present.iterate(this.#now() - this.#positiveTtl)) yield (row as { text: string }).text
  }

  /** Stores a positive entry; returns when it expires. */
  putPresent (hashPart: string, narHash: string, text: string, upstream: string): number {
    const now = this.#now()
    this.#write({ hashPart, present: true, narHash, text, upstream, fetchedAt: now })
    return now + this.#positiveTtl
  }

  /** Stores a negative entry; returns when it expires. */
  putAbsent (hashPart: string): number {
    const now = this.#now()
    this.#write({ hashPart, present: false, narHash: null, text: null, upstream: null, fetchedAt: now })
    return now + this.#negativeTtl
  }

  /**
   * Deletes every positive entry naming this NarHash (nix32), e.g. when no source has the NAR any
   * more, unsaved ones included; returns their hash parts.
   */
  dropByNarHash (narHash: string): string[] {
    const dropped = new Set<string>()
    for (const [hashPart, row] of this.#unsaved) {
      if (row.present && row.narHash === narHash) { this.#unsaved.delete(hashPart); dropped.add(hashPart) }
    }
    const stored = this.#guard.run(() => (this.#dropByNarHash.all(narHash) as Array<{ hash_part: string }>).map(r => r.hash_part), [])
    for (const hashPart of stored) dropped.add(hashPart)
    return [...dropped]
  }

  /** Deletes expired entries; returns how many. */
  purgeExpired (): number {
    const now = this.#now()
    for (const [hashPart, row] of this.#unsaved) {
      if (now - row.fetchedAt >= (row.present ? this.#positiveTtl : this.#negativeTtl)) this.#unsaved.delete(hashPart)
    }
    return this.#guard.run(() => Number(this.#purge.run(now - this.#positiveTtl, now - this.#negativeTtl).changes), 0)
  }

  #readRow (hashPart: string): Row | undefined {
    const row = this.#get.get(hashPart) as { present: number, text: string | null, upstream: string | null, fetched_at: number } | undefined
    if (row === undefined) return undefined
    return { hashPart, present: row.present === 1, narHash: null, text: row.text, upstream: row.upstream, fetchedAt: row.fetched_at }
  }

  #write (row: Row): void {
    const saved = this.#guard.run(() => {
      this.#put.run(row.hashPart, row.present ? 1 : 0, row.narHash, row.text, row.upstream, row.fetchedAt)
      return true
    }, false)
    this.#unsaved.delete(row.hashPart)
    if (saved) return
    this.#unsaved.set(row.hashPart, row)
    if (this.#unsaved.size > MAX_UNSAVED) this.#unsaved.delete(this.#unsaved.keys().next().value!)
  }

  /** Applies `check` to a stored narinfo; one that fails is logged and forgotten. */
  #usable (hashPart: string, text: string): boolean {
    const problem = this.#check?.(hashPart, text)
    if (problem === undefined) return true
    this.#log.warn({ hashPart, reason: problem }, 'cached narinfo rejected and dropped')
    this.#unsaved.delete(hashPart)
    this.#guard.run(() => this.#delete.run(hashPart), undefined)
    return false
  }
}
