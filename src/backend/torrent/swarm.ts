/**
 * Fetching one NAR from the swarm and streaming it in order as pieces arrive. The torrent is added
 * by magnet link (metadata from peers, BEP 9); the next pieces the reader needs are
 * requested before all others (see HeadWindow), so the head of the NAR comes first and Nix starts
 * unpacking at once; behind it pieces come in order (`piece-order=sequential`, the default) or
 * rarest first. WebTorrent checks each piece against its SHA-1 as it completes; the routing
 * layer checks the NarHash on top, and this module checks it too before keeping a download as a
 * seed (the NarHash is in the torrent's name).
 *
 * No progress is a failure, never absence: no metadata within `metadataTimeout` (then the web seeds
 * are used directly, if the magnet names any — see web-seed.ts) or no byte for `stallTimeout` ends
 * the fetch with a timeout UpstreamError. Several readers of one info hash share one torrent; when
 * the last one stops before the end, the torrent and its partial data are removed.
 */
import { createHash } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { IntegrityError, UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { NixHash } from '../../nix/hash.ts'
import { formatMagnet, type Magnet } from './magnet.ts'
import type { LocalDiscovery } from './lsd.ts'
import type { SeedStore } from './seeds.ts'
import type { TorrentInit } from './spec.ts'
import type { WtClient, WtTorrent } from './webtorrent.ts'

interface Download {
  torrent: WtTorrent
  readers: number
  /** Some reader read the whole NAR and it matched the NarHash in the torrent's name. */
  verified: boolean
  error?: Error
}

export class Swarm {
  readonly #client: WtClient
  readonly #seeds: SeedStore
  readonly #init: TorrentInit
  readonly #log: Logger
  readonly #downloads = new Map<string, Download>()
  readonly #lsd: LocalDiscovery | undefined

  constructor (client: WtClient, seeds: SeedStore, init: TorrentInit, log: Logger, lsd?: LocalDiscovery) {
    this.#client = client
    this.#seeds = seeds
    this.#init = init
    this.#log = log
    this.#lsd = lsd
  }

  /**
   * Joins the download of the torrent a magnet link names, starting it if nobody else is
   * fetching it. The caller must call `release` once, whatever happens.
   */
  acquire (magnet: Magnet): Download {
    let download = this.#downloads.get(magnet.infoHash)
    if (download === undefined) {
      const announce = [...new Set([...magnet.trackers, ...this.#init.trackers])]
      const torrent = this.#client.add(magnetOf(magnet), { path: this.#seeds.dataDir(magnet.infoHash), announce, strategy: this.#init.pieceOrder })
      const d: Download = { torrent, readers: 0, verified: false }
      const started = performance.now()
      const ms = (): number => Math.round(performance.now() - started)
      torrent.once('wire', () => this.#log.debug({ infoHash: magnet.infoHash, ms: ms() }, 'torrent: first peer connected'))
      torrent.once('metadata', () => this.#log.debug({ infoHash: magnet.infoHash, ms: ms(), peers: torrent.numPeers }, 'torrent: metadata received'))
      // Without a listener WebTorrent re-emits a torrent's error on the client.
      torrent.on('error', (err: Error) => { d.error = err })
      torrent.on('warning', (err: Error) => this.#log.debug({ infoHash: magnet.infoHash, err: err.message }, 'torrent warning'))
      download = d
      this.#downloads.set(magnet.infoHash, download)
      this.#lsd?.want(magnet.infoHash)
    }
    download.readers++
    return download
  }

  async release (magnet: Magnet, download: Download): Promise<void> {
    download.readers--
    if (download.readers > 0) return
    this.#downloads.delete(magnet.infoHash)
    this.#lsd?.forget(magnet.infoHash)
    const { torrent } = download
    if (download.verified && this.#init.reseed && torrent.done && !torrent.destroyed) {
      await this.#seeds.adopt(torrent.torrentFile, { inClient: true })
      this.#log.info({ infoHash: magnet.infoHash, name: torrent.name }, 'seeding a fetched NAR')
      return
    }
    await new Promise<void>(resolve => { this.#client.remove(torrent, { destroyStore: true }, () => resolve()).catch(() => resolve()) })
    await rm(this.#seeds.dataDir(magnet.infoHash), { recursive: true, force: true })
  }

  /** Resolves true once the torrent has its metadata, false after `ms` without it. */
  async metadata (download: Download, ms: number, signal?: AbortSignal): Promise<boolean> {
    const { torrent } = download
    if (torrent.metadata !== null) return true
    return await new Promise<boolean>((resolve, reject) => {
      const done = (value: boolean | Error): void => {
        clearTimeout(timer)
        torrent.removeListener('metadata', onMetadata)
        torrent.removeListener('error', onError)
        signal?.removeEventListener('abort', onAbort)
        if (value instanceof Error) reject(value); else resolve(value)
      }
      const onMetadata = (): void => done(true)
      const onError = (err: Error): void => done(new UpstreamError(`torrent ${torrent.infoHash}`, err.message))
      const onAbort = (): void => done(signal!.reason as Error)
      const timer = setTimeout(() => done(false), ms)
      torrent.once('metadata', onMetadata)
      torrent.once('error', onError)
      signal?.addEventListener('abort', onAbort, { once: true })
      if (download.error !== undefined) onError(download.error)
    })
  }

  /** The NAR's bytes in order; hashes them so that a complete, matching download can be seeded. */
  async * read (magnet: Magnet, download: Download, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    const { torrent } = download
    const source = `torrent ${magnet.infoHash}`
    const file = torrent.files[0]
    if (torrent.files.length !== 1 || file === undefined) throw new UpstreamError(source, 'not a single-file torrent')
    if (magnet.length !== undefined && file.length !== magnet.length) {
      throw new IntegrityError(`${source}: the torrent holds ${file.length} bytes, the locator says ${magnet.length}`)
    }
    const expected = narHashOfName(file.name)
    const hash = createHash('sha256')
    const iterator = file[Symbol.asyncIterator]()
    const head = new HeadWindow(torrent, file.length)
    let read = 0
    let progress = { at: Date.now(), downloaded: torrent.downloaded }
    try {
      while (read < file.length) {
        head.moveTo(read)
        const next = await guard(iterator.next(), { signal, torrent, download, stallTimeout: this.#init.stallTimeout, progress: () => {
          if (torrent.downloaded !== progress.downloaded) progress = { at: Date.now(), downloaded: torrent.downloaded }
          return progress.at
        } })
        if (next.done === true) break
        read += next.value.length
        progress = { at: Date.now(), downloaded: torrent.downloaded }
        hash.update(next.value)
        yield next.value
      }
    } finally {
      iterator.destroy()
      head.clear()
    }
    // WebTorrent ends the iterator quietly when its store fails; a short body is a failure.
    if (read !== file.length) throw new UpstreamError(source, `the stream ended after ${read} of ${file.length} bytes${download.error === undefined ? '' : `: ${download.error.message}`}`)
    if (expected !== undefined && expected.equals(new NixHash('sha256', hash.digest()))) download.verified = true
  }
}

/** The NarHash a torrent's name claims (`<nix32 NarHash>.nar`), if it follows narswarm's naming. */
export function narHashOfName (name: string): NixHash | undefined {
  const m = /^([0-9a-df-np-sv-z]{52})\.nar$/.exec(name)
  if (m === null) return undefined
  try { return NixHash.parse(`sha256:${m[1]}`) } catch { return undefined }
}

/**
 * The magnet WebTorrent is given: trackers go in `announce`; the web seeds stay, so that once the
 * metadata is there WebTorrent uses them as one more source inside the torrent (BEP 19).
 */
function magnetOf (m: Magnet): string {
  return formatMagnet({ infoHash: m.infoHash, ...(m.name === undefined ? {} : { name: m.name }), trackers: [], webSeeds: m.webSeeds })
}

/** Pieces just ahead of the reader, fetched first: the head of the stream in order. */
const AHEAD = 4

/**
 * Sequential selection for the head, whatever the order behind it (`piece-order`). WebTorrent's file iterator selects
 * the whole file and marks the next pieces critical, but with the rarest-first strategy critical
 * pieces get no precedence in the request pipeline, and the first byte waited for most of the file
 * (6 s instead of 0.2 s for 200 MiB between two local peers). A small stream selection of higher
 * priority over the next AHEAD pieces is requested before everything else; as the reader moves on,
 * the window moves with it. (`_select`/`_deselect` with the stream flag are WebTorrent's own calls
 * for this, pinned with its version; a stream selection is removed by its exact range, so the
 * window never cuts into other selections.)
 */
class HeadWindow {
  readonly #torrent: WtTorrent
  readonly #last: number
  #window: [number, number] | undefined

  constructor (torrent: WtTorrent, length: number) {
    this.#torrent = torrent
    this.#last = Math.ceil(length / torrent.pieceLength) - 1
  }

  moveTo (offset: number): void {
    const piece = Math.floor(offset / this.#torrent.pieceLength)
    if (this.#window?.[0] === piece || piece > this.#last || this.#torrent.destroyed) return
    this.clear()
    this.#window = [piece, Math.min(piece + AHEAD - 1, this.#last)]
    this.#torrent._select(this.#window[0], this.#window[1], 2, undefined, true)
  }

  clear (): void {
    if (this.#window !== undefined && !this.#torrent.destroyed) this.#torrent._deselect(this.#window[0], this.#window[1], true)
    this.#window = undefined
  }
}

interface Guard {
  signal: AbortSignal | undefined
  torrent: WtTorrent
  download: Download
  stallTimeout: number
  /** When the download last made progress (epoch ms). */
  progress: () => number
}

/** `promise`, unless the caller aborts, the torrent fails or nothing arrives for `stallTimeout`. */
async function guard<T> (promise: Promise<T>, g: Guard): Promise<T> {
  g.signal?.throwIfAborted()
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  let onError: ((err: Error) => void) | undefined
  const source = `torrent ${g.torrent.infoHash}`
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      const check = (): void => {
        if (g.download.error !== undefined) { reject(new UpstreamError(source, g.download.error.message)); return }
        const idle = Date.now() - g.progress()
        if (idle >= g.stallTimeout) {
          reject(new UpstreamError(source, `no data for ${Math.round(idle / 1000)} s (${g.torrent.numPeers} peers)`, { timeout: true }))
          return
        }
        timer = setTimeout(check, Math.min(1000, g.stallTimeout - idle))
      }
      onAbort = () => reject(g.signal!.reason)
      onError = (err: Error) => reject(new UpstreamError(source, err.message))
      g.signal?.addEventListener('abort', onAbort, { once: true })
      g.torrent.once('error', onError)
      check()
    })])
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) g.signal?.removeEventListener('abort', onAbort)
    if (onError !== undefined) g.torrent.removeListener('error', onError)
  }
}
