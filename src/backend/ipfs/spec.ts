/**
 * The three IPFS backend specs and their options, validated before anything is opened:
 *
 *   ipfs:?listen=…&bootstrap=…&routing=…     an embedded node in the narswarm process
 *   ipfs+http://127.0.0.1:5001               a kubo daemon, through its RPC API
 *   ipfs+gateway+https://gateway.example/    a trustless gateway (raw blocks, each checked)
 *
 * Every problem is a ConfigError that names the offending key. Multiaddrs are checked for shape
 * here (a bootstrap peer needs its `/p2p/<peer id>`); libp2p checks them in full at start-up.
 */
import { join, resolve } from 'node:path'
import { ConfigError } from '../../errors.ts'
import { boolean, duration, integer } from '../../util/values.ts'

export const ROUTINGS = ['none', 'dht-client', 'dht-server', 'lan-dht'] as const
export type Routing = typeof ROUTINGS[number]

/** The public IPFS bootstrap peers (kubo's list), used when no `bootstrap` is given. */
export const PUBLIC_BOOTSTRAP = [
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN',
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb',
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt',
  '/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8',
  '/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ'
]

/** Options shared by all three: how long to wait, how far to read ahead. */
export interface FetchOptions {
  /** Time to wait for a NAR's root block (its first byte), ms. */
  timeout: number
  /** Time any later block may take, ms. */
  stallTimeout: number
  /** Leaf blocks requested ahead of the reader. */
  readAhead: number
}

export interface EmbeddedInit extends FetchOptions {
  kind: 'embedded'
  /** Repository directory (blocks, datastore, peer key): absolute when given, else `ipfs` in the state dir. */
  path: string
  listen: string[]
  bootstrap: string[]
  routing: Routing
  /** Whether published roots are announced to the DHT. */
  announce: boolean
  /** Roots announced per batch, and the pause between batches (ms). */
  announceBatch: number
  announceInterval: number
  /** Serve blocks to peers, and fetch from peers, as a trustless gateway over libp2p (CAR streams). */
  libp2pGateway: boolean
  /** TCP multiaddrs to serve a trustless gateway on over plain HTTP, announced to peers; none by default. */
  gatewayListen: string[]
  /** Fetch CAR streams over plain HTTP from peers that announce such a gateway. */
  fetchHttp: boolean
}

export interface KuboInit extends FetchOptions {
  kind: 'kubo'
  /** The RPC API's base URL, e.g. http://127.0.0.1:5001 */
  api: string
  pin: boolean
}

export interface GatewayInit extends FetchOptions {
  kind: 'gateway'
  /** The gateway's base URL (ending in '/'); blocks are read from `<base>ipfs/<cid>`. */
  base: string
}

export type IpfsInit = EmbeddedInit | KuboInit | GatewayInit

const FETCH_KEYS = ['timeout', 'stall-timeout', 'read-ahead'] as const
const KEYS = {
  embedded: ['path', 'listen', 'bootstrap', 'routing', 'announce', 'announce-batch', 'announce-interval', 'libp2p-gateway', 'gateway-listen', 'fetch-http', ...FETCH_KEYS],
  kubo: ['pin', ...FETCH_KEYS],
  gateway: [...FETCH_KEYS]
} as const

export function parseIpfs (spec: URL): IpfsInit {
  const scheme = spec.protocol.slice(0, -1)
  if (scheme === 'ipfs') return parseEmbedded(spec)
  if (scheme === 'ipfs+http' || scheme === 'ipfs+https') {
    const pin = boolean(options(spec, 'kubo')('pin'), true, 'ipfs backend: pin')
    return { kind: 'kubo', api: base(spec, scheme.slice(5), 'ipfs+http').replace(/\/$/, ''), pin, ...fetchOptions(spec, 'kubo') }
  }
  if (scheme === 'ipfs+gateway+http' || scheme === 'ipfs+gateway+https') return { kind: 'gateway', base: base(spec, scheme.slice(13), 'ipfs+gateway'), ...fetchOptions(spec, 'gateway') }
  throw new ConfigError(`ipfs backend: unknown scheme '${scheme}:' (expected ipfs:, ipfs+http://host:port or ipfs+gateway+https://host/)`)
}

function parseEmbedded (spec: URL): EmbeddedInit {
  if (spec.host !== '' || (spec.pathname !== '' && spec.pathname !== '/')) {
    throw new ConfigError(`ipfs backend: the embedded node takes options only ('ipfs:?listen=…'), not '${spec.host}${spec.pathname}'; use ?path= for its repository`)
  }
  const get = options(spec, 'embedded')
  const routing = get('routing') ?? 'dht-client'
  if (!(ROUTINGS as readonly string[]).includes(routing)) throw new ConfigError(`ipfs backend: routing must be one of ${ROUTINGS.join(', ')}, got '${routing}'`)
  const listen = tcpAddresses(list(get('listen') ?? '/ip4/0.0.0.0/tcp/4001,/ip6/::/tcp/4001', 'listen'), 'listen', '/ip4/0.0.0.0/tcp/4001')
  const gatewayListen = tcpAddresses(list(get('gateway-listen') ?? '', 'gateway-listen'), 'gateway-listen', '/ip4/0.0.0.0/tcp/4002')
  const bootstrap = list(get('bootstrap') ?? (routing === 'none' || routing === 'lan-dht' ? '' : PUBLIC_BOOTSTRAP.join(',')), 'bootstrap')
  for (const addr of bootstrap) {
    if (!/^\/(ip4|ip6|dns|dns4|dns6|dnsaddr)\/[^/]+(\/tcp\/\d+)?\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/.test(addr)) {
      throw new ConfigError(`ipfs backend: bootstrap peer '${addr}' must be a multiaddr ending in /p2p/<peer id>, e.g. /ip4/192.168.1.5/tcp/4001/p2p/12D3Koo…`)
    }
  }
  const given = get('path')
  if (given === '') throw new ConfigError('ipfs backend: path must not be empty')
  if (given !== undefined && !given.startsWith('/')) {
    throw new ConfigError(`ipfs backend: path '${given}' is relative; give an absolute directory (path=${resolve(given)}), or leave path out for 'ipfs' in the state directory`)
  }
  const path = given ?? 'ipfs'
  const announce = boolean(get('announce'), routing !== 'none', 'ipfs backend: announce')
  if (announce && routing === 'none') throw new ConfigError('ipfs backend: announce=true needs a routing other than none (there is no DHT to announce to)')
  return {
    kind: 'embedded',
    path,
    listen,
    bootstrap,
    routing: routing as Routing,
    announce,
    announceBatch: positive(integer(get('announce-batch'), 8, 'ipfs backend: announce-batch'), 'announce-batch'),
    announceInterval: duration(get('announce-interval'), 10_000, 'ipfs backend: announce-interval'),
    libp2pGateway: boolean(get('libp2p-gateway'), true, 'ipfs backend: libp2p-gateway'),
    gatewayListen,
    fetchHttp: boolean(get('fetch-http'), true, 'ipfs backend: fetch-http'),
    ...fetchOptions(spec, 'embedded')
  }
}

function fetchOptions (spec: URL, kind: keyof typeof KEYS): FetchOptions {
  const get = options(spec, kind)
  return {
    timeout: positive(duration(get('timeout'), 30_000, 'ipfs backend: timeout'), 'timeout'),
    stallTimeout: positive(duration(get('stall-timeout'), 60_000, 'ipfs backend: stall-timeout'), 'stall-timeout'),
    readAhead: positive(integer(get('read-ahead'), 16, 'ipfs backend: read-ahead'), 'read-ahead')
  }
}

/** A getter for the spec's options; unknown and repeated keys are refused. */
function options (spec: URL, kind: keyof typeof KEYS): (key: string) => string | undefined {
  const known: readonly string[] = KEYS[kind]
  const seen = new Set<string>()
  for (const key of spec.searchParams.keys()) {
    if (!known.includes(key)) throw new ConfigError(`ipfs backend: unknown option '${key}' for ${kind === 'embedded' ? 'ipfs:' : kind === 'kubo' ? 'ipfs+http:' : 'ipfs+gateway:'} (known: ${known.join(', ')})`)
    if (seen.has(key)) throw new ConfigError(`ipfs backend: option '${key}' given twice (give a comma-separated list)`)
    seen.add(key)
  }
  return key => spec.searchParams.get(key) ?? undefined
}

/** The http(s) base URL inside an `ipfs+http://…` or `ipfs+gateway+https://…` spec. */
function base (spec: URL, protocol: string, what: string): string {
  if (spec.username !== '' || spec.password !== '') throw new ConfigError(`ipfs backend: ${what} URLs must not carry credentials`)
  if (spec.hostname === '') throw new ConfigError(`ipfs backend: ${what} needs a host, e.g. ${what}://127.0.0.1:5001`)
  if (spec.hash !== '') throw new ConfigError(`ipfs backend: a fragment ('${spec.hash}') is not allowed`)
  const path = spec.pathname.endsWith('/') ? spec.pathname : `${spec.pathname}/`
  return `${protocol}://${spec.host}${path}`
}

function list (value: string, key: string): string[] {
  const items = value.split(',').map(s => s.trim()).filter(s => s !== '')
  if (key === 'listen' && items.length === 0) throw new ConfigError('ipfs backend: listen must name at least one address')
  return items
}

function tcpAddresses (addrs: string[], key: string, example: string): string[] {
  for (const addr of addrs) {
    if (!/^\/ip[46]\/[^/]+\/tcp\/\d+$/.test(addr)) throw new ConfigError(`ipfs backend: ${key} address '${addr}' must be a TCP multiaddr such as ${example}`)
  }
  return addrs
}

function positive (n: number, key: string): number {
  if (!(n > 0)) throw new ConfigError(`ipfs backend: ${key} must be greater than 0`)
  return n
}

/** The repository directory of an embedded node. */
export function repoPath (init: EmbeddedInit, stateDir: string): string {
  return init.path.startsWith('/') ? init.path : join(stateDir, init.path)
}
