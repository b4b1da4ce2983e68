/**
 * The embedded index: NarHash → locators (and signed narinfos) in one SQLite file, the default
 * mapper of a single machine. `sqlite:///var/lib/narswarm/index.db` names the file; a bare `sqlite:`
 * uses `index.sqlite` in narswarm's state directory. Three tables: locators keyed by (NarHash, URL),
 * so recording a pair twice keeps one row; narinfos keyed by store-path hash part; and FileHash →
 * NarHash, so a key in nix-subsubd's terms (the sha256 of the compressed file) finds the same NAR.
 * The tables carry a `mapper_` prefix so the file may be shared with the rest of the state.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { join } from 'node:path'
import { ConfigError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import { openDatabase } from '../util/sqlite.ts'
import type { AbortOptions, IndexEntry, Locator, Mapper, MapperPlugin } from '../types.ts'
import { localPath, mapperSpec, parseLocator, parseRecordedNarInfo } from './common.ts'

export interface SqliteMapperInit {
  name: string
  /** Absolute path of the database file; undefined for `<stateDir>/index.sqlite`. */
  file: string | undefined
}

interface LocatorRow { url: string, compression: string, file_size: number | null }

export class SqliteMapper implements Mapper {
  readonly name: string
  readonly #db: DatabaseSync
  readonly #byNarHash: StatementSync
  readonly #narHashOfFile: StatementSync
  readonly #narInfo: StatementSync
  readonly #putLocator: StatementSync
  readonly #putNarInfo: StatementSync
  readonly #putFileHash: StatementSync
  #closed = false

  constructor (name: string, db: DatabaseSync) {
    this.name = name
    this.#db = db
    db.exec(`CREATE TABLE IF NOT EXISTS mapper_locator (
      nar_hash    TEXT NOT NULL,
      url         TEXT NOT NULL,
      compression TEXT NOT NULL,
      file_size   INTEGER,
      UNIQUE (nar_hash, url)
    ) STRICT;
    CREATE TABLE IF NOT EXISTS mapper_narinfo (
      hash_part TEXT PRIMARY KEY,
      nar_hash  TEXT NOT NULL,
      file_hash TEXT,
      text      TEXT NOT NULL
    ) STRICT;
    CREATE TABLE IF NOT EXISTS mapper_file_hash (
      file_hash TEXT PRIMARY KEY,
      nar_hash  TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;`)
    // Hashes are stored as Nix prints them (`sha256:<nix32>`), so the file reads well in sqlite3.
    this.#byNarHash = db.prepare('SELECT url, compression, file_size FROM mapper_locator WHERE nar_hash = ? ORDER BY rowid')
    this.#narHashOfFile = db.prepare('SELECT nar_hash FROM mapper_file_hash WHERE file_hash = ?')
    this.#narInfo = db.prepare('SELECT text FROM mapper_narinfo WHERE hash_part = ?')
    // A second record of the same (NarHash, URL) refreshes what is known about it and keeps its row.
    this.#putLocator = db.prepare(`INSERT INTO mapper_locator (nar_hash, url, compression, file_size) VALUES (?, ?, ?, ?)
      ON CONFLICT (nar_hash, url) DO UPDATE SET compression = excluded.compression, file_size = excluded.file_size`)
    this.#putNarInfo = db.prepare(`INSERT INTO mapper_narinfo (hash_part, nar_hash, file_hash, text) VALUES (?, ?, ?, ?)
      ON CONFLICT (hash_part) DO UPDATE SET nar_hash = excluded.nar_hash, file_hash = excluded.file_hash, text = excluded.text`)
    this.#putFileHash = db.prepare(`INSERT INTO mapper_file_hash (file_hash, nar_hash) VALUES (?, ?)
      ON CONFLICT (file_hash) DO UPDATE SET nar_hash = excluded.nar_hash`)
  }

  async lookup (key: NixHash, options?: AbortOptions): Promise<Locator[]> {
    options?.signal?.throwIfAborted()
    this.#open()
    const text = key.toString()
    let rows = this.#byNarHash.all(text) as unknown as LocatorRow[]
    if (rows.length === 0) {
      const mapped = this.#narHashOfFile.get(text) as { nar_hash: string } | undefined
      if (mapped !== undefined) rows = this.#byNarHash.all(mapped.nar_hash) as unknown as LocatorRow[]
    }
    return rows.map(r => r.file_size === null
      ? { url: r.url, compression: r.compression }
      : { url: r.url, compression: r.compression, fileSize: r.file_size })
  }

  async narInfo (hashPart: string, options?: AbortOptions): Promise<string | undefined> {
    options?.signal?.throwIfAborted()
    this.#open()
    const row = this.#narInfo.get(hashPart) as { text: string } | undefined
    return row?.text
  }

  async record (narHash: NixHash, locator: Locator, options?: AbortOptions & { narInfo?: string }): Promise<void> {
    options?.signal?.throwIfAborted()
    this.#open()
    parseLocator(locator, 'locator to record')
    const info = options?.narInfo === undefined ? undefined : parseRecordedNarInfo(options.narInfo, narHash)
    const nar = narHash.toString()
    // One transaction: a narinfo is never visible without its locator, nor its FileHash key without either.
    this.#db.exec('BEGIN IMMEDIATE')
    try {
      this.#putLocator.run(nar, locator.url, locator.compression, locator.fileSize ?? null)
      if (info !== undefined) {
        const fileHash = info.fileHash?.toString() ?? null
        this.#putNarInfo.run(info.hashPart, nar, fileHash, options!.narInfo!)
        if (fileHash !== null) this.#putFileHash.run(fileHash, nar)
      }
      this.#db.exec('COMMIT')
    } catch (err) {
      this.#db.exec('ROLLBACK')
      throw err
    }
  }

  async * entries (options?: AbortOptions): AsyncIterable<IndexEntry> {
    this.#open()
    // Collected first: a statement iterating while records are written would see them change.
    const hashes = (this.#db.prepare('SELECT nar_hash FROM mapper_locator UNION SELECT nar_hash FROM mapper_narinfo ORDER BY 1').all() as Array<{ nar_hash: string }>).map(r => r.nar_hash)
    const narInfos = this.#db.prepare('SELECT text FROM mapper_narinfo WHERE nar_hash = ? ORDER BY hash_part')
    for (const text of hashes) {
      options?.signal?.throwIfAborted()
      const narHash = NixHash.parse(text)
      yield { narHash, locators: await this.lookup(narHash), narInfos: (narInfos.all(text) as Array<{ text: string }>).map(r => r.text) }
    }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#db.close()
  }

  #open (): void {
    if (this.#closed) throw new Error(`mapper ${this.name} is closed`)
  }
}

export const plugin: MapperPlugin<SqliteMapperInit> = {
  scheme: 'sqlite',
  summary: 'NarHash → locators and narinfos in a SQLite file (sqlite:///path/index.db; sqlite: for the state directory)',
  parse (spec) {
    const { name, what } = mapperSpec(spec, ['sqlite:'], [])
    return { name, file: localPath(spec, what, true) }
  },
  async create (init, components) {
    const file = init.file ?? join(components.stateDir, 'index.sqlite')
    let db: DatabaseSync
    try {
      db = openDatabase(file)
    } catch (err) {
      throw new ConfigError(`mapper '${init.name}': cannot open ${file}: ${(err as Error).message}`, { cause: err })
    }
    return new SqliteMapper(init.name, db)
  }
}
