/**
 * The slice of WebTorrent this backend uses, declared here because the package ships no types,
 * and the one place the client is constructed. WebTorrent is imported only when a `torrent:` spec
 * is opened (the registry imports this backend lazily, and this module imports WebTorrent
 * dynamically), so a proxy without BitTorrent never loads it.
 *
 * Every public-network feature is an explicit choice of the spec: DHT, local service discovery,
 * peer exchange, UPnP/NAT-PMP port mapping. WebRTC is always off (no browser peers from a proxy).
 * WebTorrent listens on all interfaces; it has no option to bind one address. WebTorrent's own
 * local discovery is always off: it opens one socket per torrent (lsd.ts has one for the node).
 * Protocol encryption is off unless the spec asks for it: each encrypted connection costs about
 * 100 ms of CPU on each side in Node 24 (bittorrent-protocol creates a Diffie-Hellman object per
 * connection, and Node checks the 768-bit prime every time), which is what kept two nodes busy.
 */
import { EventEmitter } from 'node:events'
import type { TorrentInit } from './spec.ts'

export interface WtFile {
  name: string
  length: number
  path: string
  [Symbol.asyncIterator]: (opts?: { start?: number, end?: number }) => AsyncIterator<Uint8Array> & { destroy: () => void }
}

export interface WtTorrent extends EventEmitter {
  infoHash: string
  name: string
  length: number
  pieceLength: number
  files: WtFile[]
  metadata: Uint8Array | null
  torrentFile: Uint8Array
  ready: boolean
  done: boolean
  destroyed: boolean
  downloaded: number
  uploaded: number
  numPeers: number
  path: string
  progress: number
  addPeer: (peer: string) => boolean
  /** Internal: a (stream) selection of pieces `start..end` at `priority`. */
  _select: (start: number, end: number, priority: number, notify: undefined, isStreamSelection: boolean) => void
  _deselect: (start: number, end: number, isStreamSelection: boolean) => void
  destroy: (opts?: { destroyStore?: boolean }, cb?: (err?: Error) => void) => void
}

export interface WtAddOptions {
  path: string
  announce?: string[]
  urlList?: string[]
  skipVerify?: boolean
  strategy?: 'rarest' | 'sequential'
  destroyStoreOnDestroy?: boolean
}

export interface WtClient extends EventEmitter {
  torrents: WtTorrent[]
  /** Hex. */
  peerId: string
  torrentPort: number
  add: (id: string | Uint8Array, opts: WtAddOptions, onTorrent?: (t: WtTorrent) => void) => WtTorrent
  get: (id: string) => Promise<WtTorrent | null>
  remove: (id: string | WtTorrent, opts?: { destroyStore?: boolean }, cb?: (err?: Error) => void) => Promise<void>
  destroy: (cb?: (err?: Error) => void) => void
  address: () => { address: string, port: number } | null
  listening: boolean
}

type WtConstructor = new (opts: Record<string, unknown>) => WtClient

/** Starts a client per the spec and waits until it listens (or fails to). */
export async function startClient (init: TorrentInit): Promise<WtClient> {
  // Through a variable so that TypeScript does not look for the package's (absent) types.
  const name = 'webtorrent'
  const WebTorrent = (await import(name) as { default: WtConstructor }).default
  const client = new WebTorrent({
    dht: init.dht,
    lsd: false,
    secure: init.encryption ? 1 : 0,
    utPex: init.pex,
    natUpnp: init.nat,
    natPmp: init.nat,
    utp: init.utp,
    webSeeds: true,
    torrentPort: init.port,
    downloadLimit: init.downloadLimit,
    uploadLimit: init.uploadLimit,
    tracker: { wrtc: false }
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => { client.destroy(); reject(err) }
    client.once('error', onError)
    client.once('listening', () => { client.removeListener('error', onError); resolve() })
  })
  return client
}
