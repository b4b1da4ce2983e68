/**
 * Opening a SQLite file (`node:sqlite`, built into Node): the state database under the state
 * directory, and the embedded IPFS node's block index. Each store on top of one creates its own
 * tables; this module only opens the file with settings that suit many small reads and writes: WAL, so
 * readers never wait for the writer; `synchronous = NORMAL`, which is crash-safe in WAL mode; a
 * busy timeout for a second narswarm process on the same file.
 */
import { DatabaseSync } from 'node:sqlite'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'

/** The state database of a state directory (narinfo cache, chunk store index, node state). */
export function stateDatabase (stateDir: string): string {
  return join(stateDir, 'narswarm.sqlite')
}

export function openDatabase (file: string): DatabaseSync {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true })
  const db = new DatabaseSync(file)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;')
  return db
}
