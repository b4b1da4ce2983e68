/**
 * Local state that cannot be written is not an outage. narswarm's state (the narinfo cache, the
 * chunk store, what peers told it) only saves work: when the disk is full, read-only or failing,
 * a request that can be answered from the network is answered without storing, and the condition
 * is logged — once when it starts, then at most one line per `logEvery` with how many writes were
 * skipped, and once when writes work again. Nothing has to be restarted: every write is simply
 * tried again, so the state recovers by itself when space returns.
 *
 * Only storage failures are absorbed (see `storageFailure`); any other error is a bug and is thrown.
 */
import { StorageError } from '../errors.ts'
import type { Logger } from '../log.ts'

/** SQLite primary result codes that mean "the storage refused" (extended codes are masked to these). */
const SQLITE_STORAGE_CODES = new Map([
  [5, 'SQLITE_BUSY'], // another process holds the lock past the busy timeout
  [8, 'SQLITE_READONLY'],
  [10, 'SQLITE_IOERR'],
  [13, 'SQLITE_FULL'],
  [14, 'SQLITE_CANTOPEN']
])

/** File-system error codes that mean the same. */
const FS_STORAGE_CODES = new Set(['ENOSPC', 'EROFS', 'EDQUOT', 'EIO', 'EACCES', 'EPERM'])

/**
 * `err` as a StorageError when it is a storage failure (node:sqlite or file system), else
 * undefined.
 */
export function storageFailure (err: unknown): StorageError | undefined {
  if (err instanceof StorageError) return err
  if (typeof err !== 'object' || err === null) return undefined
  const { code, errcode } = err as { code?: unknown, errcode?: unknown }
  if (code === 'ERR_SQLITE_ERROR' && typeof errcode === 'number') {
    const name = SQLITE_STORAGE_CODES.get(errcode & 0xff)
    if (name !== undefined) return new StorageError(`${(err as Error).message} (${name})`, { cause: err })
  }
  if (typeof code === 'string' && FS_STORAGE_CODES.has(code)) return new StorageError(`${(err as Error).message} (${code})`, { cause: err })
  return undefined
}

export interface WriteGuardInit {
  /** What is being written, for the log (e.g. 'narinfo cache'). */
  what: string
  log: Logger
  /** Milliseconds between two log lines while the failure lasts. */
  logEvery?: number
  now?: () => number
}

export class WriteGuard {
  readonly #what: string
  readonly #log: Logger
  readonly #logEvery: number
  readonly #now: () => number
  /** Failures since the last log line; -1 while storage works. */
  #skipped = -1
  #loggedAt = 0

  constructor (init: WriteGuardInit) {
    this.#what = init.what
    this.#log = init.log
    this.#logEvery = init.logEvery ?? 60_000
    this.#now = init.now ?? Date.now
  }

  /** True while the last attempt failed. */
  get failing (): boolean { return this.#skipped >= 0 }

  /** Runs `operation`; on a storage failure logs (rate-limited) and returns `fallback`. */
  run<T> (operation: () => T, fallback: T): T {
    let value: T
    try {
      value = operation()
    } catch (err) {
      this.failed(err)
      return fallback
    }
    this.#succeeded()
    return value
  }

  /**
   * `run` for a read: a storage failure is absorbed and logged the same way, but a read that works
   * says nothing about writes, so it does not end a failure.
   */
  read<T> (operation: () => T, fallback: T): T {
    try {
      return operation()
    } catch (err) {
      this.failed(err)
      return fallback
    }
  }

  /** `run` for an asynchronous operation. */
  async runAsync<T> (operation: () => Promise<T>, fallback: T): Promise<T> {
    let value: T
    try {
      value = await operation()
    } catch (err) {
      this.failed(err)
      return fallback
    }
    this.#succeeded()
    return value
  }

  /** A failure caught where the write was made (a stream's): logged as `run` does; anything else is thrown. */
  failed (err: unknown): void {
    const failure = storageFailure(err)
    if (failure === undefined) throw err
    const now = this.#now()
    if (this.#skipped < 0) {
      this.#skipped = 0
      this.#loggedAt = now
      this.#log.warn({ state: this.#what, err: failure.message }, 'state write failed; serving without storing until it works again')
      return
    }
    this.#skipped++
    if (now - this.#loggedAt >= this.#logEvery) {
      this.#log.warn({ state: this.#what, err: failure.message, skipped: this.#skipped }, 'state writes still failing; serving without storing')
      this.#skipped = 0
      this.#loggedAt = now
    }
  }

  #succeeded (): void {
    if (this.#skipped < 0) return
    this.#log.info({ state: this.#what, skipped: this.#skipped }, 'state writes work again')
    this.#skipped = -1
  }
}
