/**
 * Reads confined to one directory. A path that is lexically inside the directory can still lead
 * out of it through a symlink — the file itself, or any directory on the way — so a file is
 * resolved to its real path first and refused (OutsideDirectoryError) unless that lies inside the
 * directory's real path; symlinks that stay inside are followed. The file is then opened by its
 * real path without following a symlink at the last step (O_NOFOLLOW), and the descriptor is checked
 * to be that very file (same device and inode as the real path, resolved again): a directory
 * swapped for a symlink between the check and the open is caught, and the bytes read are those of
 * the file that was checked. The directory's own path may contain symlinks (it is configuration).
 */
import { constants } from 'node:fs'
import { mkdir, open, realpath, stat, type FileHandle } from 'node:fs/promises'
import { sep } from 'node:path'
import { OutsideDirectoryError } from '../errors.ts'

export class ConfinedDirectory {
  readonly path: string

  /** `path`: the directory, absolute. */
  constructor (path: string) {
    this.path = path
  }

  /**
   * Opens the regular file at `path` (absolute, lexically inside the directory) for reading:
   * undefined when there is no such file (or it is not a regular file); OutsideDirectoryError when
   * it leads out of the directory.
   */
  async open (path: string): Promise<{ handle: FileHandle, size: number } | undefined> {
    const real = await this.#realInside(path)
    if (real === undefined) return undefined
    let handle: FileHandle
    try {
      handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    } catch (err) {
      if (isAbsent(err)) return undefined
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw this.#changed(path)
      throw err
    }
    try {
      const st = await handle.stat()
      if (!st.isFile()) { await handle.close(); return undefined }
      const again = await realpath(real).catch(() => undefined)
      const now = again === real ? await stat(real).catch(() => undefined) : undefined
      if (now === undefined || now.dev !== st.dev || now.ino !== st.ino) throw this.#changed(path)
      return { handle, size: st.size }
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  /** The text of the file at `path`, or undefined when there is none (see `open`). */
  async readText (path: string): Promise<string | undefined> {
    const opened = await this.open(path)
    if (opened === undefined) return undefined
    try {
      return await opened.handle.readFile('utf8')
    } finally {
      await opened.handle.close()
    }
  }

  /** Makes the directory `path` (inside this one) if needed, and checks it does not lead out. */
  async makeDirectory (path: string): Promise<void> {
    await mkdir(path, { recursive: true })
    if (await this.#realInside(path) === undefined) throw new OutsideDirectoryError(`${path} vanished while it was made`)
  }

  /** The real path of `path` if it is inside; undefined when it does not exist. */
  async #realInside (path: string): Promise<string | undefined> {
    let real: string
    let root: string
    try {
      real = await realpath(path)
    } catch (err) {
      if (isAbsent(err)) return undefined
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new OutsideDirectoryError(`${path}: a symlink loop`)
      throw err
    }
    try {
      root = await realpath(this.path)
    } catch (err) {
      if (isAbsent(err)) return undefined
      throw err
    }
    if (real !== root && !real.startsWith(root.endsWith(sep) ? root : `${root}${sep}`)) {
      throw new OutsideDirectoryError(`${path} leads out of ${this.path} through a symlink (to ${real}); refused`)
    }
    return real
  }

  #changed (path: string): OutsideDirectoryError {
    return new OutsideDirectoryError(`${path} changed while it was opened (a symlink swapped in); refused`)
  }
}

/** Whether a file system error says the path is not there (ENOENT, or ENOTDIR on the way). */
export function isAbsent (err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
