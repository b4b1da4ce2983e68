/**
 * The `torrent:` spec and its options, validated before anything is opened:
 *
 *   torrent:?tracker=udp://tracker.example:6969&dht=true&port=6881&upload-limit=1MiB&max-seeds=200
 *   torrent:///srv/narswarm-torrents?web-seed=https://cache.example/&reseed=false
 *
 * A path, when given, is the directory for NAR files and .torrent files; without one they live under
 * `<state dir>/torrent`. Every option is documented in docs/torrent.md.
 */
import { ConfigError } from '../../errors.ts'
import { boolean, duration, integer, parseSize, relativePathError, specPath } from '../../util/values.ts'
import { DEFAULT_PIECE_LENGTH } from './metainfo.ts'

export interface TorrentInit {
  /** Absolute directory; undefined: `<stateDir>/torrent`. */
  directory?: string
  trackers: string[]
  /** Base URLs under which `nar/<nix32 NarHash>.nar` is the uncompressed NAR (each ends in `/`). */
  webSeeds: string[]
  dht: boolean
  lsd: boolean
  pex: boolean
  /** UPnP and NAT-PMP port mapping on the home router. */
  nat: boolean
  utp: boolean
  /** BitTorrent protocol encryption (MSE/PE), offered with a plaintext fallback. */
  encryption: boolean
  /** TCP/uTP listen port; 0: any free port. */
  port: number
  /** Bytes per second; -1: unlimited. */
  uploadLimit: number
  downloadLimit: number
  maxSeeds: number
  reseed: boolean
  pieceLength: number
  /**
   * Which pieces behind the reader's head are fetched first. `sequential` by default: WebTorrent's
   * rarest-first picker is quadratic in the number of pieces (a 200 MiB NAR between two local
   * peers: 30 MiB/s against 112 MiB/s sequential).
   */
  pieceOrder: 'sequential' | 'rarest'
  /** Milliseconds to wait for a torrent's metadata from the swarm before the web seed is used directly, or the fetch fails. */
  metadataTimeout: number
  /** Milliseconds a download may make no progress before it fails. */
  stallTimeout: number
}

export const TORRENT_DEFAULTS: TorrentInit = {
  trackers: [],
  webSeeds: [],
  dht: true,
  lsd: true,
  pex: true,
  nat: false,
  utp: false,
  encryption: false,
  port: 6881,
  uploadLimit: -1,
  downloadLimit: -1,
  maxSeeds: 100,
  reseed: true,
  pieceLength: DEFAULT_PIECE_LENGTH,
  pieceOrder: 'sequential',
  metadataTimeout: 10_000,
  stallTimeout: 30_000
}

const REPEATABLE = new Set(['tracker', 'web-seed'])
/** The spec's options (docs/torrent.md has a row for each). */
export const TORRENT_OPTIONS = ['tracker', 'web-seed', 'dht', 'lsd', 'pex', 'nat', 'utp', 'encryption', 'port', 'upload-limit', 'download-limit',
  'max-seeds', 'reseed', 'piece-length', 'piece-order', 'metadata-timeout', 'stall-timeout']

export function parseTorrentSpec (spec: URL): TorrentInit {
  const where = `torrent backend '${spec.protocol}${spec.pathname === '' ? '' : `//${spec.host}${spec.pathname}`}'`
  if (spec.protocol !== 'torrent:') throw new ConfigError(`${where}: expected a torrent: spec`)
  if (spec.host !== '') throw new ConfigError(`${where}: the directory must be an absolute path (torrent:///${spec.host}${spec.pathname})`)
  if (spec.hash !== '') throw new ConfigError(`${where}: a fragment ('${spec.hash}') is not allowed`)
  const init: TorrentInit = { ...TORRENT_DEFAULTS, trackers: [], webSeeds: [] }
  const path = specPath(where, spec).replace(/(.)\/+$/, '$1')
  if (path !== '') {
    if (!path.startsWith('/')) throw relativePathError(`${where}: the directory must be an absolute path`, spec, path)
    if (path === '/') throw new ConfigError(`${where}: refusing to use the root directory`)
    init.directory = path
  }
  const seen = new Set<string>()
  for (const [key, value] of spec.searchParams) {
    const what = `${where}: ${key}`
    if (!TORRENT_OPTIONS.includes(key)) throw new ConfigError(`${where}: unknown option '${key}' (known: ${TORRENT_OPTIONS.join(', ')})`)
    if (seen.has(key) && !REPEATABLE.has(key)) throw new ConfigError(`${what} is given twice`)
    seen.add(key)
    switch (key) {
      case 'tracker': init.trackers.push(url(value, ['http:', 'https:', 'udp:', 'ws:', 'wss:'], what)); break
      case 'web-seed': init.webSeeds.push(url(value, ['http:', 'https:'], what).replace(/\/?$/, '/')); break
      case 'dht': init.dht = boolean(value, true, what); break
      case 'lsd': init.lsd = boolean(value, true, what); break
      case 'pex': init.pex = boolean(value, true, what); break
      case 'nat': init.nat = boolean(value, false, what); break
      case 'utp': init.utp = boolean(value, false, what); break
      case 'encryption': init.encryption = boolean(value, false, what); break
      case 'reseed': init.reseed = boolean(value, true, what); break
      case 'port': {
        const port = integer(value, 0, what)
        if (port < 0 || port > 65535) throw new ConfigError(`${what} must be between 0 and 65535, got ${port}`)
        init.port = port
        break
      }
      case 'upload-limit': init.uploadLimit = rate(value, what); break
      case 'download-limit': init.downloadLimit = rate(value, what); break
      case 'max-seeds': {
        const n = integer(value, 0, what)
        if (n < 1) throw new ConfigError(`${what} must be at least 1 (to keep no fetched torrent, set reseed=false), got ${n}`)
        init.maxSeeds = n
        break
      }
      case 'piece-length': {
        const n = size(value, what)
        if (n < 16 * 1024 || n > 16 * 1024 * 1024 || (n & (n - 1)) !== 0) {
          throw new ConfigError(`${what} must be a power of two between 16KiB and 16MiB, got '${value}'`)
        }
        init.pieceLength = n
        break
      }
      case 'piece-order':
        if (value !== 'sequential' && value !== 'rarest') throw new ConfigError(`${what} must be sequential or rarest, got '${value}'`)
        init.pieceOrder = value
        break
      case 'metadata-timeout': init.metadataTimeout = positive(duration(value, 0, what), what); break
      case 'stall-timeout': init.stallTimeout = positive(duration(value, 0, what), what); break
    }
  }
  return init
}

function url (value: string, protocols: string[], what: string): string {
  let u: URL
  try { u = new URL(value) } catch { throw new ConfigError(`${what} is not a URL: '${value}'`) }
  if (!protocols.includes(u.protocol)) throw new ConfigError(`${what} must be a ${protocols.map(p => p.slice(0, -1)).join('/')} URL, got '${u.protocol}'`)
  return u.href
}

function positive (ms: number, what: string): number {
  if (ms <= 0) throw new ConfigError(`${what} must be longer than zero`)
  return ms
}

/** A byte count such as `65536`, `512KiB`, `2M` (binary units, as everywhere in narswarm). */
export function size (value: string, what: string): number {
  const n = parseSize(value)
  if (n === undefined) throw new ConfigError(`${what} must be a byte count such as 65536, 512KiB or 2MiB, got '${value}'`)
  return n
}

/** Bytes per second; `unlimited` (the default) is -1. */
function rate (value: string, what: string): number {
  if (value === 'unlimited') return -1
  const n = size(value, `${what} (bytes per second)`)
  if (n <= 0) throw new ConfigError(`${what} must be more than zero bytes per second (omit it, or say 'unlimited', for no limit)`)
  return n
}
