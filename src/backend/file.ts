/**
 * The `file` backend: a directory of NARs on a local (or mounted) file system, e.g.
 * `file:///srv/nars?compression=xz`. It opens any file under that directory whose locator is a
 * `file://` URL naming it, in whatever compression the locator says, and publishes NARs into it
 * under content-addressed names, `nar/<nix32 NarHash>.nar[.xz|.zst|.bz2|.br]`, the layout
 * `nix copy --to file://` uses, so the directory can also be served as a binary cache.
 *
 * Publishing is crash-safe: the bytes go to a temporary file in the same directory, are flushed
 * to disk, and only then renamed into place, so a reader never sees a half-written NAR under its
 * final name. The NarHash and NarSize are checked while writing; a mismatch removes the
 * temporary file and throws IntegrityError, so nothing unverified is ever stored.
 *
 * A locator outside the directory resolves to undefined (it is not this backend's to serve, and
 * the directory is the only thing it was told it may read), as does a file that does not exist.
 * A file inside that leads out through a symlink (the file or a directory on its way) is refused
 * with OutsideDirectoryError; symlinks that stay inside the directory are followed (see
 * util/confined.ts, which also makes the check hold against a symlink swapped in meanwhile).
 */
import { createWriteStream } from 'node:fs'
import { mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { isAbsolute, join, relative, resolve, sep } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ConfigError, OutsideDirectoryError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { compress, narFileName, type Compression } from '../nix/compression.ts'
import { compression as parseCompression } from '../util/values.ts'
import type { AbortOptions, Backend, BackendPlugin, Components, Locator, NarSource, NarUpload } from '../types.ts'
import { ConfinedDirectory, isAbsent } from '../util/confined.ts'
import { closedWriteStream, readFileChunks } from '../util/file-stream.ts'
import { verifyNar } from '../util/verify.ts'

export interface FileBackendInit {
  /** Absolute path of the directory. */
  directory: string
  /** Compression of the NARs this backend publishes. */
  compression: Compression
}

export class FileBackend implements Backend {
  readonly name: string
  readonly schemes = ['file'] as const
  readonly directory: string
  readonly compression: Compression
  readonly #confined: ConfinedDirectory
  readonly #log: Logger | undefined

  constructor (init: FileBackendInit, log?: Logger) {
    this.#log = log
    this.directory = resolve(init.directory)
    this.#confined = new ConfinedDirectory(this.directory)
    this.compression = init.compression
    this.name = pathToFileURL(this.directory).href
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    options.signal?.throwIfAborted()
    const path = this.#pathOf(locator.url)
    if (path === undefined) return undefined
    // Checked now, to answer "not here" or refuse at once; opened (and checked) again when read,
    // so a source that is never read holds no descriptor.
    let opened
    try {
      opened = await this.#confined.open(path)
    } catch (err) {
      // Logged here too: another source may win the race, which would leave the refusal unseen.
      if (err instanceof OutsideDirectoryError) this.#log?.warn({ backend: this.name, err: err.message }, 'file backend refused a path that leads out of its directory')
      throw err
    }
    if (opened === undefined) return undefined
    await opened.handle.close()
    const size = opened.size
    const open = async (): Promise<FileHandle> => {
      const again = await this.#confined.open(path)
      if (again === undefined) throw new Error(`${path} is gone`)
      return again.handle
    }
    return { body: readFileChunks(path, options.signal === undefined ? { size, open } : { size, open, signal: options.signal }), compression: locator.compression, fileSize: size }
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    const signal = options.signal
    signal?.throwIfAborted()
    const name = narFileName(nar.narHash, this.compression)
    const target = join(this.directory, name)
    // Content-addressed: a file under this name was verified when it was written.
    const existing = await stat(target).catch((err: unknown) => { if (isAbsent(err)) return undefined; throw err })
    if (existing?.isFile() === true) return this.#locator(target, existing.size)

    await this.#confined.makeDirectory(join(this.directory, 'nar'))
    const temp = join(this.directory, 'nar', `.${nar.narHash.toNix32()}.${randomBytes(6).toString('hex')}.tmp`)
    // flush: the file is synced before it is closed, so after a crash the final name (given only
    // after that) holds the whole NAR or nothing.
    const out = createWriteStream(temp, { flags: 'wx', flush: true })
    try {
      const verified = verifyNar(nar.body, nar, `publishing ${name}`)
      const body = compress(this.compression, verified, signal === undefined ? { sizeHint: nar.narSize } : { signal, sizeHint: nar.narSize })
      await pipeline(body, out, signal === undefined ? {} : { signal })
      await rename(temp, target)
      await syncDirectory(join(this.directory, 'nar'))
    } catch (err) {
      await closedWriteStream(out)
      await unlink(temp).catch(() => {})
      throw err
    }
    return this.#locator(target, out.bytesWritten)
  }

  async close (): Promise<void> {}

  #locator (path: string, fileSize: number): Locator {
    return { url: pathToFileURL(path).href, compression: this.compression, fileSize }
  }

  /** The file a locator names, or undefined when it is not a file URL inside the directory. */
  #pathOf (url: string): string | undefined {
    let path: string
    try {
      const u = new URL(url)
      if (u.protocol !== 'file:' || (u.host !== '' && u.host !== 'localhost')) return undefined
      path = resolve(fileURLToPath(u))
    } catch {
      return undefined
    }
    const rel = relative(this.directory, path)
    if (rel === '' || isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) return undefined
    return path
  }
}

/** Makes a rename in `dir` durable; some file systems refuse to sync a directory, which is fine. */
async function syncDirectory (dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r')
    try { await handle.sync() } finally { await handle.close() }
  } catch {}
}

function parse (spec: URL): FileBackendInit {
  const where = `file backend '${spec.protocol}//${spec.host}${spec.pathname}'`
  if (spec.protocol !== 'file:') throw new ConfigError(`${where}: expected a file:///absolute/path spec`)
  if (spec.host !== '' && spec.host !== 'localhost') {
    throw new ConfigError(`${where}: the path must be absolute (file:///${spec.host}${spec.pathname}), not relative to '${spec.host}'`)
  }
  if (spec.hash !== '') throw new ConfigError(`${where}: a fragment ('${spec.hash}') is not allowed`)
  let compression: Compression = 'zstd'
  for (const [key, value] of spec.searchParams) {
    if (key === 'compression') {
      compression = parseCompression(value, compression, where)
    } else {
      throw new ConfigError(`${where}: unknown option '${key}' (known: compression)`)
    }
  }
  const directory = fileURLToPath(new URL(`file://${spec.pathname}`)).replace(/(.)\/+$/, '$1')
  if (directory === '/') throw new ConfigError(`${where}: refusing to use the root directory`)
  return { directory, compression }
}

export const plugin: BackendPlugin<FileBackendInit> = {
  scheme: 'file',
  summary: 'a local directory of NARs (file:///srv/nars?compression=zstd); publishes content-addressed, crash-safe',
  parse,
  create: async (init: FileBackendInit, components: Components) => {
    await mkdir(init.directory, { recursive: true })
    return new FileBackend(init, components.log)
  }
}
