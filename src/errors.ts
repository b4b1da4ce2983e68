/**
 * Every error class narswarm throws, in one place. A missing thing is a value (`undefined`, `[]`),
 * never one of these; these are failures. Each carries a stable `name` so that code across process
 * or package boundaries can compare `err.name` instead of relying on `instanceof`. The HTTP status
 * for each is decided in one function, `statusFor` in `src/server/respond.ts`.
 */

/** Bytes or text that do not follow a Nix format (narinfo, NAR, hash, store path, key, nix-cache-info). */
export class FormatError extends Error {
  static override readonly name = 'FormatError'
  override readonly name = 'FormatError'
  /** Byte offset (NAR) or line number (narinfo) where the problem was found, when known. */
  readonly position?: number
  constructor (message: string, options?: ErrorOptions & { position?: number }) {
    super(message, options)
    if (options?.position !== undefined) this.position = options.position
  }
}

/** Content that does not match the hash or size it was promised to have (NarHash, NarSize, CID…). */
export class IntegrityError extends Error {
  static override readonly name = 'IntegrityError'
  override readonly name = 'IntegrityError'
}

/** A signature that is malformed, or no signature from a trusted key where one is required. */
export class SignatureError extends Error {
  static override readonly name = 'SignatureError'
  override readonly name = 'SignatureError'
}

/** A configuration file, environment variable or flag that is wrong. */
export class ConfigError extends Error {
  static override readonly name = 'ConfigError'
  override readonly name = 'ConfigError'
}

/**
 * A remote source (upstream cache, mirror, peer) that failed without saying "absent":
 * connection refused, timeout, 5xx, a protocol violation. Never to be read as a 404.
 */
export class UpstreamError extends Error {
  static override readonly name = 'UpstreamError'
  override readonly name = 'UpstreamError'
  /** The source's name, for logs. */
  readonly source: string
  /** The HTTP status the source answered with, if it answered at all. */
  readonly status?: number
  /** True when the failure was a timeout rather than a refusal or an error answer. */
  readonly timeout: boolean
  constructor (source: string, message: string, options?: ErrorOptions & { status?: number, timeout?: boolean }) {
    super(`${source}: ${message}`, options)
    this.source = source
    this.timeout = options?.timeout ?? false
    if (options?.status !== undefined) this.status = options.status
  }
}

/** A request that cannot be served however long one waits (e.g. an unsatisfiable Range). */
export class RangeNotSatisfiableError extends Error {
  static override readonly name = 'RangeNotSatisfiableError'
  override readonly name = 'RangeNotSatisfiableError'
}

/**
 * Local storage that refused a write or read of narswarm's own state: disk full, read-only, an I/O
 * error (ENOSPC, EROFS, EACCES, EIO…). The original error is the `cause`. Callers that can still
 * answer without storing (see `WriteGuard`) do so.
 */
export class StorageError extends Error {
  static override readonly name = 'StorageError'
  override readonly name = 'StorageError'
  /** The errno code of the cause, when it had one (`ENOSPC`, `EROFS`…). */
  readonly code?: string
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    const code = (options?.cause as NodeJS.ErrnoException | undefined)?.code
    if (typeof code === 'string') this.code = code
  }
}

/**
 * A path inside a directory that narswarm may read (the file backend's, the folder mapper's, an
 * index export) that leads out of it through a symlink, or that was swapped while it was opened.
 */
export class OutsideDirectoryError extends Error {
  static override readonly name = 'OutsideDirectoryError'
  override readonly name = 'OutsideDirectoryError'
}

/** A command line that cannot be run as given (unknown flag or command, missing argument): exit status 2. */
export class UsageError extends Error {
  static override readonly name = 'UsageError'
  override readonly name = 'UsageError'
}
