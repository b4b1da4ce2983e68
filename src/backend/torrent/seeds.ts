/**
 * What this node seeds, on disk and in the client. Layout under the backend's directory:
 *
 *   torrents/<info hash>.torrent     one per seeded NAR; its modification time is its last use
 *   data/<info hash>/<nix32 NarHash>.nar   the uncompressed NAR (the torrent's single file)
 *   published/<info hash>            empty: this node published it, so an index names it
 *   tmp/                             NARs being written; emptied at start
 *
 * A .torrent file is written (atomically) only once its data is complete and verified, so after a
 * restart every .torrent with a data file of the right size is seeded again without re-hashing
 * (peers check every piece anyway). What this node published is always seeded: an index holds its
 * magnet link, and a cap that silently dropped it would leave the index pointing at nothing. The
 * seeding cap `maxSeeds` is for what it fetched: beyond it, the least recently used fetched torrent
 * that nobody is reading is removed, its data with it.
 */
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Logger } from '../../log.ts'
import { parseTorrentFile, type ParsedTorrent } from './metainfo.ts'
import type { WtClient } from './webtorrent.ts'

export interface Seed {
  infoHash: string
  name: string
  length: number
  /** The data file. */
  file: string
  torrent: ParsedTorrent
}

export class SeedStore {
  readonly directory: string
  readonly #client: WtClient
  readonly #log: Logger
  readonly #maxSeeds: number
  /** In least-recently-used order: the first entry is evicted first. */
  readonly #seeds = new Map<string, Seed>()
  readonly #byName = new Map<string, string>()
  /** Info hashes being read right now, with a count; never evicted. */
  readonly #inUse = new Map<string, number>()
  /** Info hashes this node published: never evicted, not counted against the cap. */
  readonly #published = new Set<string>()

  constructor (directory: string, client: WtClient, maxSeeds: number, log: Logger) {
    this.directory = directory
    this.#client = client
    this.#maxSeeds = maxSeeds
    this.#log = log
  }

  get size (): number { return this.#seeds.size }
  /** Seeded torrents that this node fetched (those the cap applies to). */
  get fetched (): number { return this.#seeds.size - this.#published.size }
  get tmpDir (): string { return join(this.directory, 'tmp') }
  dataDir (infoHash: string): string { return join(this.directory, 'data', infoHash) }

  /**
   * Creates the layout and seeds again what was seeded before: everything published, and the most
   * recently used fetched torrents within the cap.
   */
  async resume (): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true })
    for (const d of ['torrents', 'data', 'published', 'tmp']) await mkdir(join(this.directory, d), { recursive: true })
    const published = new Set((await readdir(join(this.directory, 'published'))).filter(e => /^[0-9a-f]{40}$/.test(e)))
    const found: Array<{ infoHash: string, mtime: number }> = []
    for (const entry of await readdir(join(this.directory, 'torrents'))) {
      const m = /^([0-9a-f]{40})\.torrent$/.exec(entry)
      if (m === null) continue
      found.push({ infoHash: m[1]!, mtime: (await stat(join(this.directory, 'torrents', entry))).mtimeMs })
    }
    found.sort((a, b) => a.mtime - b.mtime)
    const fetched = found.filter(f => !published.has(f.infoHash)).length
    let skipped = 0
    for (const { infoHash } of found) {
      const isPublished = published.has(infoHash)
      if (!isPublished && skipped < fetched - this.#maxSeeds) { skipped++; await this.#delete(infoHash); continue }
      try {
        const metainfo = await readFile(this.#torrentPath(infoHash))
        const torrent = parseTorrentFile(metainfo)
        const file = join(this.dataDir(infoHash), torrent.info.name)
        if (torrent.infoHash !== infoHash || (await stat(file)).size !== torrent.info.length) throw new Error('data does not match the torrent')
        this.#register({ infoHash, name: torrent.info.name, length: torrent.info.length, file, torrent })
        if (isPublished) this.#published.add(infoHash)
        this.#client.add(metainfo, { path: this.dataDir(infoHash), skipVerify: true })
      } catch (err) {
        // A published one is still named by an index: `narswarm publish` of the path seeds it again.
        this.#log.warn({ infoHash, published: isPublished, err: (err as Error).message },
          isPublished ? 'dropping a published torrent that cannot be resumed: publish the path again to repair the index' : 'dropping a seeded torrent that cannot be resumed')
        await this.#delete(infoHash)
      }
    }
    if (found.length > 0) this.#log.info({ seeding: this.#seeds.size, published: this.#published.size }, 'torrents resumed')
  }

  get (infoHash: string): Seed | undefined { return this.#seeds.get(infoHash) }
  byName (name: string): Seed | undefined {
    const infoHash = this.#byName.get(name)
    return infoHash === undefined ? undefined : this.#seeds.get(infoHash)
  }

  /** Whether this node published `infoHash` (and so always seeds it). */
  isPublished (infoHash: string): boolean { return this.#published.has(infoHash) }

  /** Marks a seed as published: an index names it, so it is seeded whatever the cap. */
  async markPublished (infoHash: string): Promise<void> {
    if (this.#published.has(infoHash) || !this.#seeds.has(infoHash)) return
    // In memory first: a concurrent adopt's eviction must already see it as published.
    this.#published.add(infoHash)
    await writeFile(join(this.directory, 'published', infoHash), '')
  }

  /** Marks a seed as just used (LRU order, and on disk for the next start). */
  touch (infoHash: string): void {
    const seed = this.#seeds.get(infoHash)
    if (seed === undefined) return
    this.#seeds.delete(infoHash)
    this.#seeds.set(infoHash, seed)
    const now = new Date()
    utimes(this.#torrentPath(infoHash), now, now).catch(() => {})
  }

  /** Holds a seed against eviction while it is read; returns the release function. */
  hold (infoHash: string): () => void {
    this.#inUse.set(infoHash, (this.#inUse.get(infoHash) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.#inUse.get(infoHash) ?? 1) - 1
      if (n === 0) this.#inUse.delete(infoHash); else this.#inUse.set(infoHash, n)
    }
  }

  /**
   * Records a complete, verified torrent whose data is already at `dataDir(infoHash)/<name>`, adds
   * it to the client unless it is there (a finished download is), and evicts beyond the cap.
   */
  async adopt (torrentBytes: Uint8Array, options: { inClient: boolean, published?: boolean }, torrent = parseTorrentFile(torrentBytes)): Promise<Seed> {
    const { infoHash } = torrent
    const temp = join(this.tmpDir, `${infoHash}.${randomBytes(4).toString('hex')}.torrent`)
    await writeFile(temp, torrentBytes)
    await rename(temp, this.#torrentPath(infoHash))
    const seed: Seed = { infoHash, name: torrent.info.name, length: torrent.info.length, file: join(this.dataDir(infoHash), torrent.info.name), torrent }
    this.#register(seed)
    if (options.published === true) await this.markPublished(infoHash)
    if (!options.inClient && await this.#client.get(infoHash) === null) {
      this.#client.add(torrentBytes, { path: this.dataDir(infoHash), skipVerify: true })
    }
    await this.#evict()
    return seed
  }

  /** Moves a complete, verified `file` into place as the data of `torrentBytes`, and adopts it. */
  async adoptFile (file: string, torrentBytes: Uint8Array, options: { published?: boolean } = {}): Promise<Seed> {
    const torrent = parseTorrentFile(torrentBytes)
    await mkdir(this.dataDir(torrent.infoHash), { recursive: true })
    await rename(file, join(this.dataDir(torrent.infoHash), torrent.info.name))
    return await this.adopt(torrentBytes, { inClient: false, ...options }, torrent)
  }

  #register (seed: Seed): void {
    this.#seeds.delete(seed.infoHash)
    this.#seeds.set(seed.infoHash, seed)
    this.#byName.set(seed.name, seed.infoHash)
  }

  async #evict (): Promise<void> {
    for (const infoHash of [...this.#seeds.keys()]) {
      if (this.fetched <= this.#maxSeeds) return
      if (this.#inUse.has(infoHash) || this.#published.has(infoHash)) continue
      this.#log.debug({ infoHash }, 'seeding cap reached: removing the least recently used torrent')
      await this.#delete(infoHash)
    }
  }

  async #delete (infoHash: string): Promise<void> {
    const seed = this.#seeds.get(infoHash)
    this.#seeds.delete(infoHash)
    if (seed !== undefined && this.#byName.get(seed.name) === infoHash) this.#byName.delete(seed.name)
    this.#published.delete(infoHash)
    const torrent = await this.#client.get(infoHash)
    if (torrent !== null) await new Promise<void>(resolve => { this.#client.remove(torrent, { destroyStore: false }, () => resolve()).catch(() => resolve()) })
    await rm(this.#torrentPath(infoHash), { force: true })
    await rm(join(this.directory, 'published', infoHash), { force: true })
    await rm(this.dataDir(infoHash), { recursive: true, force: true })
  }

  #torrentPath (infoHash: string): string { return join(this.directory, 'torrents', `${infoHash}.torrent`) }
}
