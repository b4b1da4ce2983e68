/**
 * The `torrent` backend: a BitTorrent client inside the proxy (WebTorrent, over TCP and uTP). Each
 * NAR is published as its own single-file torrent of the uncompressed NAR (see metainfo.ts for the
 * exact parameters) and seeded; its locator is a magnet link with the info hash, the size, the
 * trackers and the web seeds. Opening a magnet streams the NAR in order from the swarm (swarm.ts),
 * or from the web seeds directly when no peer sends the metadata in time (web-seed.ts); what was
 * fetched and verified is seeded in turn (`reseed`), within the seeding cap (seeds.ts).
 *
 * Absence and failure: a magnet link naming no BitTorrent content is not this backend's (undefined);
 * an info hash nobody offers is a timeout (UpstreamError), never absence — the swarm may just be slow.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import type { Dispatcher } from 'undici'
import { UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { createHttpDispatcher } from '../../util/http-client.ts'
import { closedWriteStream, readFileChunks } from '../../util/file-stream.ts'
import { verifyNar } from '../../util/verify.ts'
import type { AbortOptions, Backend, BackendPlugin, Components, Locator, NarSource, NarUpload } from '../../types.ts'
import { formatMagnet, parseMagnet, type Magnet } from './magnet.ts'
import { infoHashOf, PieceHasher, torrentFile, type Info } from './metainfo.ts'
import { LocalDiscovery } from './lsd.ts'
import { SeedStore, type Seed } from './seeds.ts'
import { parseTorrentSpec, type TorrentInit } from './spec.ts'
import { Swarm } from './swarm.ts'
import { fetchFromWebSeeds } from './web-seed.ts'
import { startClient, type WtClient } from './webtorrent.ts'

export type { TorrentInit } from './spec.ts'

export class TorrentBackend implements Backend {
  readonly name: string
  readonly schemes = ['magnet'] as const
  readonly #init: TorrentInit
  readonly #client: WtClient
  readonly #seeds: SeedStore
  readonly #swarm: Swarm
  readonly #dispatcher: Dispatcher
  readonly #log: Logger
  readonly #lsd: LocalDiscovery | undefined
  #closed: Promise<void> | undefined

  constructor (init: TorrentInit, client: WtClient, seeds: SeedStore, log: Logger, lsd?: LocalDiscovery) {
    this.#init = init
    this.#client = client
    this.#seeds = seeds
    this.#log = log
    this.#lsd = lsd
    this.#swarm = new Swarm(client, seeds, init, log, lsd)
    this.#dispatcher = createHttpDispatcher({ connections: 8, connectTimeout: 5_000 })
    this.name = 'torrent'
  }

  /** The port peers connect to (useful when the spec said `port=0`). */
  get port (): number { return this.#client.torrentPort }
  /** Number of torrents seeded. */
  get seeding (): number { return this.#seeds.size }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    options.signal?.throwIfAborted()
    const magnet = parseMagnet(locator.url)
    if (magnet === undefined) return undefined
    const source: NarSource = { body: this.#body(magnet, options.signal), compression: 'none' }
    if (magnet.length !== undefined) source.fileSize = magnet.length
    return source
  }

  async * #body (magnet: Magnet, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    if (magnet.length === 0) return
    const seed = this.#seeds.get(magnet.infoHash)
    if (seed !== undefined) {
      yield * this.#readSeed(seed, signal)
      return
    }
    const download = this.#swarm.acquire(magnet)
    let released = false
    try {
      if (await this.#swarm.metadata(download, this.#init.metadataTimeout, signal)) {
        yield * this.#swarm.read(magnet, download, signal)
        return
      }
      const peers = download.torrent.numPeers
      // The torrent without metadata goes first, so that what the web seed delivers can take its place.
      released = true
      await this.#swarm.release(magnet, download)
      if (magnet.webSeeds.length === 0) {
        throw new UpstreamError(`torrent ${magnet.infoHash}`, `no peer sent the torrent's metadata within ${this.#init.metadataTimeout} ms (${peers} peers)`, { timeout: true })
      }
      yield * fetchFromWebSeeds(magnet, {
        dispatcher: this.#dispatcher,
        seeds: this.#seeds,
        pieceLength: this.#init.pieceLength,
        trackers: this.#init.trackers,
        reseed: this.#init.reseed,
        stallTimeout: this.#init.stallTimeout,
        log: this.#log,
        inClient: async h => (await this.#client.get(h)) !== null
      }, signal)
    } finally {
      if (!released) await this.#swarm.release(magnet, download)
    }
  }

  async * #readSeed (seed: Seed, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const release = this.#seeds.hold(seed.infoHash)
    this.#seeds.touch(seed.infoHash)
    try {
      yield * readFileChunks(seed.file, { size: seed.length, signal })
    } finally {
      release()
    }
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    const signal = options.signal
    signal?.throwIfAborted()
    const name = `${nar.narHash.toNix32()}.nar`
    const webSeeds = this.#init.webSeeds.map(base => `${base}nar/${name}`)
    const existing = this.#seeds.byName(name)
    if (existing !== undefined && existing.torrent.info.pieceLength === this.#init.pieceLength) {
      this.#seeds.touch(existing.infoHash)
      await this.#seeds.markPublished(existing.infoHash)
      return this.#locator(existing.torrent.info, existing.infoHash, [...new Set([...existing.torrent.webSeeds, ...webSeeds])])
    }
    await mkdir(this.#seeds.tmpDir, { recursive: true })
    const temp = join(this.#seeds.tmpDir, `${name}.${randomBytes(4).toString('hex')}.part`)
    const pieces = new PieceHasher(this.#init.pieceLength)
    let info: Info
    let infoHash: string
    const out = createWriteStream(temp, { flags: 'wx' })
    try {
      const hashed = async function * (): AsyncGenerator<Uint8Array> {
        for await (const chunk of verifyNar(nar.body, nar, `publishing ${name}`)) { pieces.update(chunk); yield chunk }
      }
      await pipeline(hashed(), out, signal === undefined ? {} : { signal })
      info = { name, length: nar.narSize, pieceLength: this.#init.pieceLength, pieces: pieces.finish() }
      infoHash = infoHashOf(info)
      // A zero-length NAR cannot be a torrent (no pieces); its magnet link alone says everything.
      if (nar.narSize > 0) await this.#seeds.adoptFile(temp, torrentFile(info, this.#init.trackers, webSeeds), { published: true })
    } finally {
      await closedWriteStream(out)
      await rm(temp, { force: true })
    }
    this.#log.debug({ infoHash, name }, 'NAR published as a torrent')
    return this.#locator(info, infoHash, webSeeds)
  }

  /**
   * Whether this node still seeds what `locator` names: `publish` asks before it skips a path
   * already recorded, so that it seeds again what was lost (data deleted, a torrent that could
   * not be resumed) and the index never names a torrent its publisher stopped seeding.
   */
  async has (locator: Locator): Promise<boolean> {
    const magnet = parseMagnet(locator.url)
    if (magnet === undefined) return false
    return magnet.length === 0 || this.#seeds.isPublished(magnet.infoHash)
  }

  #locator (info: Info, infoHash: string, webSeeds: string[]): Locator {
    const url = formatMagnet({ infoHash, name: info.name, length: info.length, trackers: this.#init.trackers, webSeeds })
    return { url, compression: 'none', fileSize: info.length }
  }

  async close (): Promise<void> {
    this.#closed ??= (async () => {
      await this.#lsd?.close()
      await new Promise<void>(resolve => this.#client.destroy(() => resolve()))
      await this.#dispatcher.close().catch(() => {})
    })()
    await this.#closed
  }
}

async function create (init: TorrentInit, components: Components): Promise<TorrentBackend> {
  const directory = resolve(init.directory ?? join(components.stateDir, 'torrent'))
  await mkdir(directory, { recursive: true })
  const log = components.log.child({ backend: 'torrent' })
  const client = await startClient(init)
  // WebTorrent reports trouble with one torrent or one transport on the client: it is logged, the
  // affected fetches fail through their own checks, and the proxy keeps running.
  client.on('error', (err: Error) => log.warn({ err: err.message }, 'BitTorrent client error'))
  const seeds = new SeedStore(directory, client, init.maxSeeds, log)
  let lsd: LocalDiscovery | undefined
  try {
    await seeds.resume()
    if (init.lsd) {
      lsd = new LocalDiscovery({ port: client.torrentPort, peerId: client.peerId, log, onPeer: (infoHash, address) => addPeer(client, infoHash, address) })
      await lsd.start()
    }
  } catch (err) {
    await lsd?.close()
    client.destroy()
    throw err
  }
  log.info({ port: client.torrentPort, seeding: seeds.size, dht: init.dht, lsd: init.lsd, trackers: init.trackers.length }, 'BitTorrent client listening')
  return new TorrentBackend(init, client, seeds, log, lsd)
}

/** A peer announced on the LAN, for the torrent it named only (if this node has it). */
function addPeer (client: WtClient, infoHash: string, address: string): void {
  const torrent = client.torrents.find(t => t.infoHash === infoHash)
  if (torrent === undefined || torrent.destroyed) return
  try { torrent.addPeer(address) } catch { /* destroyed meanwhile */ }
}

export const plugin: BackendPlugin<TorrentInit> = {
  scheme: 'torrent',
  summary: 'a BitTorrent client (WebTorrent): every NAR a torrent with web seeds; locators are magnet links',
  parse: parseTorrentSpec,
  create
}
