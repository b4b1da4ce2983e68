/**
 * An index kept as plain files, in the layout of nix-subsubd's map folder, so it can be versioned in
 * git, rsynced, or served by any static web server: `DIR/<first char>/<key>.yaml`, where `key` is a
 * sha256 in lowercase base16. nix-subsubd keyed entries by the FileHash (the sha256 of the
 * `.nar.xz`); narswarm writes each entry under its NarHash and, once a narinfo with a FileHash is
 * recorded, a second file with the same content under that FileHash. Narinfos are also kept by
 * store-path hash part as `DIR/narinfo/<hashPart>.narinfo`. The YAML schema is in
 * docs/index-formats.md; readers ignore keys they do not know.
 *
 * Every write goes to a temporary file in the same directory and is renamed into place, so a
 * reader (or a crash) never sees half a file. Records of one NAR are serialized in this process so
 * that concurrent ones merge instead of losing locators; two processes writing one folder may still
 * race (the last rename wins), which is why one writer per folder is the rule.
 *
 * Reads and writes stay inside the folder: a file or directory in it that leads out through a
 * symlink is refused with OutsideDirectoryError (symlinks that stay inside are followed).
 */
import fs from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { ConfigError, FormatError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import { isHashPart } from '../nix/store-path.ts'
import type { AbortOptions, IndexEntry, Locator, Mapper, MapperPlugin } from '../types.ts'
import { ConfinedDirectory } from '../util/confined.ts'
import { localPath, mapperSpec, parseLocators, parseLocator, parseRecordedNarInfo } from './common.ts'

export interface FolderMapperInit {
  name: string
  /** Absolute path of the folder. */
  dir: string
}

/** One entry file, as read (unknown keys dropped) or about to be written. */
interface FolderEntry {
  narHash: NixHash
  fileHash?: NixHash
  narSize?: number
  locators: Locator[]
  narInfo?: string
}

const FOLDER_FORMAT_VERSION = 1

/** `DIR/<first char>/<base16>.yaml` for a sha256 key. */
function entryPath (dir: string, key: NixHash): string {
  const hex = key.toBase16()
  return join(dir, hex.slice(0, 1), `${hex}.yaml`)
}

/** Reads the YAML text of an entry; `where` names the file in errors. */
export function parseEntry (text: string, where: string): FolderEntry {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new FormatError(`${where}: not YAML: ${(err as Error).message}`, { cause: err })
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FormatError(`${where}: expected a YAML mapping`)
  const { version, narHash, fileHash, narSize, locators, narInfo } = doc as Record<string, unknown>
  if (version !== FOLDER_FORMAT_VERSION) throw new FormatError(`${where}: unsupported version ${JSON.stringify(version)} (this reader knows ${FOLDER_FORMAT_VERSION})`)
  const hash = (value: unknown, key: string): NixHash => {
    if (typeof value !== 'string') throw new FormatError(`${where}: '${key}' must be a hash such as sha256:…`)
    try { return NixHash.parse(value) } catch (err) { throw new FormatError(`${where}: '${key}': ${(err as Error).message}`, { cause: err }) }
  }
  const entry: FolderEntry = { narHash: hash(narHash, 'narHash'), locators: locators === undefined || locators === null ? [] : parseLocators(locators, where) }
  if (fileHash !== undefined && fileHash !== null) entry.fileHash = hash(fileHash, 'fileHash')
  if (narSize !== undefined && narSize !== null) {
    if (typeof narSize !== 'number' || !Number.isSafeInteger(narSize) || narSize <= 0) throw new FormatError(`${where}: 'narSize' must be a positive integer`)
    entry.narSize = narSize
  }
  if (narInfo !== undefined && narInfo !== null) {
    if (typeof narInfo !== 'string') throw new FormatError(`${where}: 'narInfo' must be a text block`)
    entry.narInfo = narInfo
  }
  return entry
}

/** The YAML text of an entry, keys in the documented order. */
function formatEntry (entry: FolderEntry): string {
  const doc: Record<string, unknown> = { version: FOLDER_FORMAT_VERSION, narHash: entry.narHash.toString() }
  if (entry.fileHash !== undefined) doc.fileHash = entry.fileHash.toString()
  if (entry.narSize !== undefined) doc.narSize = entry.narSize
  doc.locators = entry.locators.map(l => l.fileSize === undefined ? { url: l.url, compression: l.compression } : { url: l.url, compression: l.compression, fileSize: l.fileSize })
  if (entry.narInfo !== undefined) doc.narInfo = entry.narInfo
  return stringifyYaml(doc, { lineWidth: 0 })
}

/** Writes `text` to `file` through a temporary sibling and a rename, so the file is never partial. */
async function writeFileAtomic (file: string, text: string, confined: ConfinedDirectory): Promise<void> {
  const dir = file.slice(0, file.lastIndexOf('/'))
  await confined.makeDirectory(dir)
  // A dot-name never matches `<key>.yaml`, so readers and globbing tools skip leftovers of a crash.
  const temp = join(dir, `.${file.slice(dir.length + 1)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await fs.open(temp, 'wx', 0o644)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(temp, file)
  } catch (err) {
    await fs.rm(temp, { force: true })
    throw err
  }
}

export class FolderMapper implements Mapper {
  readonly name: string
  readonly dir: string
  readonly #confined: ConfinedDirectory
  /** Tail of the queue of records per NarHash (base16), so concurrent ones merge instead of racing. */
  readonly #queues = new Map<string, Promise<void>>()

  constructor (name: string, dir: string) {
    this.name = name
    this.dir = dir
    this.#confined = new ConfinedDirectory(dir)
  }

  async lookup (key: NixHash, options?: AbortOptions): Promise<Locator[]> {
    options?.signal?.throwIfAborted()
    if (key.algorithm !== 'sha256') return []
    return (await this.#read(key))?.locators ?? []
  }

  async narInfo (hashPart: string, options?: AbortOptions): Promise<string | undefined> {
    options?.signal?.throwIfAborted()
    // The hash part becomes a file name: anything but one cannot be in the index.
    if (!isHashPart(hashPart)) return undefined
    return await this.#confined.readText(join(this.dir, 'narinfo', `${hashPart}.narinfo`))
  }

  async record (narHash: NixHash, locator: Locator, options?: AbortOptions & { narInfo?: string }): Promise<void> {
    options?.signal?.throwIfAborted()
    const checked = parseLocator(locator, 'locator to record')
    const info = options?.narInfo === undefined ? undefined : parseRecordedNarInfo(options.narInfo, narHash)
    if (narHash.algorithm !== 'sha256') throw new FormatError(`NarHash ${narHash.toString()} is not sha256`)
    const queueKey = narHash.toBase16()
    const previous = this.#queues.get(queueKey) ?? Promise.resolve()
    const mine = previous.then(async () => {
      const entry = (await this.#read(narHash)) ?? { narHash, locators: [] }
      const at = entry.locators.findIndex(l => l.url === checked.url)
      if (at < 0) entry.locators.push(checked)
      else entry.locators[at] = checked
      if (info !== undefined) {
        entry.narSize = info.narSize
        entry.narInfo = options!.narInfo!
        if (info.fileHash?.algorithm === 'sha256') entry.fileHash = info.fileHash
        // The narinfo file first: an entry never points at a narinfo that is not there.
        await writeFileAtomic(join(this.dir, 'narinfo', `${info.hashPart}.narinfo`), options!.narInfo!, this.#confined)
      }
      const text = formatEntry(entry)
      await writeFileAtomic(entryPath(this.dir, narHash), text, this.#confined)
      if (entry.fileHash !== undefined && !entry.fileHash.equals(narHash)) await writeFileAtomic(entryPath(this.dir, entry.fileHash), text, this.#confined)
    })
    // The queue continues after a failed record; the failure goes to its own caller.
    const tail = mine.catch(() => {})
    this.#queues.set(queueKey, tail)
    void tail.then(() => { if (this.#queues.get(queueKey) === tail) this.#queues.delete(queueKey) })
    await mine
  }

  async * entries (options?: AbortOptions): AsyncIterable<IndexEntry> {
    for (const c of '0123456789abcdef') {
      let names: string[]
      try { names = (await fs.readdir(join(this.dir, c))).filter(n => /^[0-9a-f]{64}\.yaml$/.test(n)).sort() } catch { continue }
      for (const name of names) {
        options?.signal?.throwIfAborted()
        const key = NixHash.parseDigest('sha256', name.slice(0, 64))
        const entry = await this.#read(key)
        // The copy kept under a FileHash is the same entry: listed once, under its NarHash.
        if (entry === undefined || !entry.narHash.equals(key)) continue
        yield { narHash: entry.narHash, locators: entry.locators, narInfos: entry.narInfo === undefined ? [] : [entry.narInfo] }
      }
    }
  }

  async close (): Promise<void> {
    await Promise.all(this.#queues.values())
  }

  /** The entry stored under `key`, checked to be about that key; undefined when there is no file. */
  async #read (key: NixHash): Promise<FolderEntry | undefined> {
    const file = entryPath(this.dir, key)
    const text = await this.#confined.readText(file)
    if (text === undefined) return undefined
    const where = `${this.name}: ${file.slice(this.dir.length + 1)}`
    const entry = parseEntry(text, where)
    if (!entry.narHash.equals(key) && entry.fileHash?.equals(key) !== true) {
      throw new FormatError(`${where}: the file is about narHash ${entry.narHash.toString()}, not ${key.toString()} (a file kept under a FileHash must say 'fileHash')`)
    }
    return entry
  }
}

export const plugin: MapperPlugin<FolderMapperInit> = {
  scheme: 'folder',
  summary: 'index as YAML files in a folder, nix-subsubd layout (folder:///srv/nss-map)',
  parse (spec) {
    const { name, what } = mapperSpec(spec, ['folder:'], [])
    const dir = localPath(spec, what, false)!
    return { name, dir: dir.length > 1 ? dir.replace(/\/+$/, '') : dir }
  },
  async create (init) {
    try {
      await fs.mkdir(init.dir, { recursive: true })
    } catch (err) {
      throw new ConfigError(`mapper '${init.name}': cannot use folder ${init.dir}: ${(err as Error).message}`, { cause: err })
    }
    return new FolderMapper(init.name, init.dir)
  }
}
