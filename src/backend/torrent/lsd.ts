/**
 * Local service discovery (BEP 14) for the whole node: one UDP socket on the multicast group
 * 239.192.152.143:6771, whatever the number of torrents. WebTorrent's own LSD (bittorrent-lsd
 * through torrent-discovery) opens one socket per torrent, each of which receives every
 * announcement on the LAN and hands the sender to *its* torrent whatever info hash was announced:
 * with 338 torrents, one announcement made every torrent connect to the announcer, which knew
 * none of them, and the connections were retried forever (see docs/torrent.md, "CPU and sockets").
 *
 * Here an announcement reaches only the torrents it names. A node announces the torrents it is
 * fetching (when a fetch starts, and again each minute while it runs: BEP 14's rate limit); it
 * does not announce what it seeds, since a seed connects to whoever announces a torrent it has.
 * Several info hashes share one message (BEP 14 allows it), so a message stays under one packet.
 */
import { createSocket, type Socket } from 'node:dgram'
import type { Logger } from '../../log.ts'

const LSD_GROUP = '239.192.152.143'
const LSD_PORT = 6771
/** Info hashes per message: 25 × 52 bytes keeps a message under 1,400 bytes. */
const PER_MESSAGE = 25
/** BEP 14: announce a torrent at most once a minute. */
const REANNOUNCE_MS = 60_000

export interface LsdOptions {
  /** The TCP port peers connect to. */
  port: number
  /** This client's peer id (hex): the cookie that lets us ignore our own announcements. */
  peerId: string
  log: Logger
  /** A peer announced `infoHash` from `address` (`ip:port`). */
  onPeer: (infoHash: string, address: string) => void
}

export class LocalDiscovery {
  readonly #options: LsdOptions
  readonly #socket: Socket
  readonly #cookie: string
  /** Info hashes announced until `forget`, each with when it was last announced. */
  readonly #wanted = new Map<string, number>()
  #pending = new Set<string>()
  #flush: NodeJS.Immediate | undefined
  readonly #timer: NodeJS.Timeout
  #closed = false

  constructor (options: LsdOptions) {
    this.#options = options
    this.#cookie = `narswarm-${options.peerId}`
    this.#socket = createSocket({ type: 'udp4', reuseAddr: true })
    this.#socket.on('message', (msg, rinfo) => this.#receive(msg.toString('latin1'), rinfo.address))
    // Discovery is a convenience: a socket error turns it off, never the node.
    this.#socket.on('error', err => options.log.warn({ err: err.message }, 'local peer discovery failed'))
    this.#timer = setInterval(() => this.#reannounce(), REANNOUNCE_MS).unref()
  }

  /** Binds the socket; a failure is logged and leaves discovery off (the node runs on without it). */
  async start (): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        this.#socket.once('error', reject)
        this.#socket.bind(LSD_PORT, () => { this.#socket.off('error', reject); resolve() })
      })
    } catch (err) {
      this.#options.log.warn({ err: (err as Error).message }, 'local peer discovery is off: its socket cannot be bound')
      this.#closed = true
      clearInterval(this.#timer)
      this.#socket.close()
      return
    }
    try {
      this.#socket.addMembership(LSD_GROUP)
    } catch (err) {
      this.#options.log.warn({ err: (err as Error).message }, 'local peer discovery cannot join its multicast group: announcing only')
    }
  }

  /** Announces `infoHash` now and each minute until `forget`. */
  want (infoHash: string): void {
    this.#wanted.set(infoHash, Date.now())
    this.#queue([infoHash])
  }

  forget (infoHash: string): void {
    this.#wanted.delete(infoHash)
  }

  #reannounce (): void {
    const now = Date.now()
    const due = [...this.#wanted].filter(([, at]) => now - at >= REANNOUNCE_MS).map(([h]) => h)
    for (const h of due) this.#wanted.set(h, now)
    this.#queue(due)
  }

  #queue (infoHashes: string[]): void {
    if (this.#closed || infoHashes.length === 0) return
    for (const h of infoHashes) this.#pending.add(h)
    this.#flush ??= setImmediate(() => {
      this.#flush = undefined
      const all = [...this.#pending]
      this.#pending = new Set()
      for (let i = 0; i < all.length; i += PER_MESSAGE) this.#send(all.slice(i, i + PER_MESSAGE))
    })
  }

  #send (infoHashes: string[]): void {
    const message = formatAnnounce({ host: `${LSD_GROUP}:${LSD_PORT}`, port: this.#options.port, infoHashes, cookie: this.#cookie })
    this.#socket.send(message, LSD_PORT, LSD_GROUP, err => {
      if (err !== null && err !== undefined) this.#options.log.debug({ err: err.message }, 'local peer discovery: announcement not sent')
    })
  }

  #receive (text: string, from: string): void {
    const announce = parseAnnounce(text)
    if (announce === undefined || announce.cookie === this.#cookie) return
    for (const infoHash of announce.infoHashes) this.#options.onPeer(infoHash, `${from}:${announce.port}`)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    if (this.#flush !== undefined) clearImmediate(this.#flush)
    await new Promise<void>(resolve => this.#socket.close(() => resolve()))
  }
}

export interface Announce { host: string, port: number, infoHashes: string[], cookie?: string }

export function formatAnnounce (a: Announce): string {
  return ['BT-SEARCH * HTTP/1.1', `Host: ${a.host}`, `Port: ${a.port}`,
    ...a.infoHashes.map(h => `Infohash: ${h}`), ...(a.cookie === undefined ? [] : [`cookie: ${a.cookie}`]), '', ''].join('\r\n')
}

/** A BEP 14 announcement, or undefined for anything else (which is ignored). */
export function parseAnnounce (text: string): Announce | undefined {
  const lines = text.split('\r\n')
  if (lines[0] !== 'BT-SEARCH * HTTP/1.1') return undefined
  let host = ''
  let port: number | undefined
  let cookie: string | undefined
  const infoHashes: string[] = []
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'host') host = value
    else if (name === 'port' && /^\d{1,5}$/.test(value)) port = Number(value)
    else if (name === 'infohash' && /^[0-9a-fA-F]{40}$/.test(value)) infoHashes.push(value.toLowerCase())
    else if (name === 'cookie') cookie = value
  }
  if (port === undefined || port === 0 || port > 65535 || infoHashes.length === 0) return undefined
  return { host, port, infoHashes, ...(cookie === undefined ? {} : { cookie }) }
}
