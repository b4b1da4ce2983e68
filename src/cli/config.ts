/**
 * narswarm's configuration: one schema, three layers. A TOML file (`--config`, `NARSWARM_CONFIG`),
 * then environment variables `NARSWARM_<KEY>` (dashes become underscores), then command-line flags
 * `--<key>`; each layer overrides the one before. Unknown keys, variables and flags are errors —
 * a misspelt setting must not be silently ignored. `narswarm.example.toml` documents every key.
 */
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { ConfigError } from '../errors.ts'
import { LOG_LEVELS, type LogLevel } from '../log.ts'
import { checkedPublicKeys, DEFAULT_UPSTREAM, parseUpstreamSpec, upstreamFromTable, type UpstreamConfig } from '../upstream/spec.ts'
import { duration, integer, size } from '../util/values.ts'
import { DEFAULT_PEER_PORT } from '../peer/protocol.ts'
import { normalizePeerUrl } from '../peer/table.ts'
import { INDEX_API_MODES, type IndexApiMode } from '../server/index-api.ts'
import { SERVER_LIMIT_DEFAULTS, type ServerLimits } from '../server/limits.ts'

export interface Config {
  listen: { host: string, port: number }
  stateDir: string
  priority: number
  logLevel: LogLevel
  narinfoPositiveTtl: number
  narinfoNegativeTtl: number
  badSourceCooldown: number
  shutdownGrace: number
  hedgeDelay: number
  firstByteTimeout: number
  /** Milliseconds untrusted sources (index, peers) get to complete a NAR before the upstreams start too. */
  untrustedBudget: number
  /** Bytes on disk the chunk store may keep; 0 keeps a NAR only while it is being served. */
  cacheSize: number
  upstreams: UpstreamConfig[]
  /** Mapper specs, asked in order. */
  mappers: string[]
  /** Backend specs; the upstreams' own NAR URLs are always the last resort. */
  backends: string[]
  /** Keys that make a narinfo from an index (mapper) usable; default: every upstream's keys. */
  trustedPublicKeys: string[]
  /** How LAN peers are found: DNS-SD over mDNS, or not at all (static peers only). */
  discovery: Discovery
  /** Milliseconds between mDNS announcements; a peer silent for three of them is gone. */
  discoveryInterval: number
  /** The peer listener's address; undefined when `peer-listen = "off"`. */
  peerListen: { host: string, port: number } | undefined
  /** Static peers (`http://host:port`), kept whatever discovery says. */
  peers: string[]
  peerKey: string
  peerKeyFile: string
  /** Bytes per second the peer listener sends to all peers together; 0: no limit. */
  peerUploadLimit: number
  peerMaxRequests: number
  /** Who may read the first mapper's index at /narswarm/v1/. */
  indexApi: IndexApiMode
  limits: ServerLimits
}

export const DISCOVERY_MODES = ['mdns', 'off'] as const
export type Discovery = typeof DISCOVERY_MODES[number]

type Kind = 'string' | 'integer' | 'duration' | 'size' | 'log-level'

/** Top-level scalar settings: key → kind and default. `upstream` is handled on its own. */
export const SETTINGS: Record<string, { kind: Kind, default: string | number }> = {
  listen: { kind: 'string', default: '127.0.0.1:37515' },
  'state-dir': { kind: 'string', default: '' },
  priority: { kind: 'integer', default: 40 },
  'log-level': { kind: 'log-level', default: 'info' },
  'narinfo-positive-ttl': { kind: 'duration', default: '30d' },
  'narinfo-negative-ttl': { kind: 'duration', default: '10m' },
  'bad-source-cooldown': { kind: 'duration', default: '10m' },
  'shutdown-grace': { kind: 'duration', default: '10s' },
  'hedge-delay': { kind: 'duration', default: '250ms' },
  'first-byte-timeout': { kind: 'duration', default: '30s' },
  'untrusted-budget': { kind: 'duration', default: '20s' },
  discovery: { kind: 'string', default: 'mdns' },
  'discovery-interval': { kind: 'duration', default: '10s' },
  'peer-listen': { kind: 'string', default: `0.0.0.0:${DEFAULT_PEER_PORT}` },
  'peer-key': { kind: 'string', default: '' },
  'peer-key-file': { kind: 'string', default: '' },
  'peer-upload-limit': { kind: 'size', default: '0' },
  'peer-max-requests': { kind: 'integer', default: 64 },
  'cache-size': { kind: 'size', default: '10GiB' },
  'index-api': { kind: 'string', default: 'local' },
  'header-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.headersTimeout / 1000}s` },
  'request-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.requestTimeout / 1000}s` },
  'keep-alive-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.keepAliveTimeout / 1000}s` },
  'max-connections': { kind: 'integer', default: SERVER_LIMIT_DEFAULTS.maxConnections },
  'max-connections-per-client': { kind: 'integer', default: SERVER_LIMIT_DEFAULTS.maxConnectionsPerClient }
}

/** Settings that take a list: repeatable flags, space-separated environment variables, TOML arrays. */
export const LIST_SETTINGS = ['upstream', 'mapper', 'backend', 'trusted-public-keys', 'peer'] as const
type ListSetting = typeof LIST_SETTINGS[number]

export interface ConfigSources {
  /** Parsed flags: setting key → value; `upstream` → list of specs; `config` → file. */
  flags: Record<string, string | string[] | undefined>
  env: NodeJS.ProcessEnv
}

export function loadConfig ({ flags, env }: ConfigSources): Config {
  const raw: Record<string, unknown> = {}
  const lists: Partial<Record<ListSetting, unknown[]>> = {}
  const isList = (key: string): key is ListSetting => (LIST_SETTINGS as readonly string[]).includes(key)

  const file = (flags.config as string | undefined) ?? env.NARSWARM_CONFIG
  if (file !== undefined && file !== '') {
    const table = readToml(file)
    for (const [key, value] of Object.entries(table)) {
      if (isList(key)) {
        if (!Array.isArray(value)) {
          throw new ConfigError(key === 'upstream'
            ? `${file}: 'upstream' must be an array of tables ([[upstream]]) or of URL strings`
            : `${file}: '${key}' must be an array of strings`)
        }
        lists[key] = value
      } else if (key in SETTINGS) raw[key] = value
      else throw new ConfigError(`${file}: unknown key '${key}' (known: ${[...Object.keys(SETTINGS), ...LIST_SETTINGS].join(', ')})`)
    }
  }

  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('NARSWARM_') || value === undefined || name === 'NARSWARM_CONFIG') continue
    const key = name.slice('NARSWARM_'.length).toLowerCase().replaceAll('_', '-')
    if (isList(key)) lists[key] = value.split(/\s+/).filter(Boolean)
    else if (key in SETTINGS) raw[key] = value
    else throw new ConfigError(`unknown environment variable ${name} (known: ${[...Object.keys(SETTINGS), ...LIST_SETTINGS, 'config'].map(envName).join(', ')})`)
  }

  for (const [key, value] of Object.entries(flags)) {
    if (value === undefined || key === 'config') continue
    if (isList(key)) lists[key] = value as string[]
    else raw[key] = value
  }

  const get = (key: string): unknown => raw[key] ?? SETTINGS[key]!.default
  const logLevel = String(get('log-level'))
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`log-level must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`)
  }
  const discovery = String(get('discovery'))
  if (!(DISCOVERY_MODES as readonly string[]).includes(discovery)) {
    throw new ConfigError(`discovery must be one of ${DISCOVERY_MODES.join(', ')}, got '${discovery}'`)
  }
  const discoveryInterval = duration(get('discovery-interval'), 0, 'discovery-interval')
  if (discoveryInterval < 100) throw new ConfigError(`discovery-interval must be at least 100ms, got '${String(get('discovery-interval'))}'`)
  const stateDir = String(get('state-dir'))
  const indexApi = String(get('index-api'))
  if (!(INDEX_API_MODES as readonly string[]).includes(indexApi)) {
    throw new ConfigError(`index-api must be one of ${INDEX_API_MODES.join(', ')}, got '${indexApi}'`)
  }
  const upstreams = parseUpstreams(lists.upstream ?? [DEFAULT_UPSTREAM])
  return {
    listen: parseListen(String(get('listen'))),
    stateDir: stateDir === '' ? defaultStateDir(env) : resolve(stateDir),
    priority: integer(get('priority'), 40, 'priority'),
    logLevel: logLevel as LogLevel,
    narinfoPositiveTtl: duration(get('narinfo-positive-ttl'), 0, 'narinfo-positive-ttl'),
    narinfoNegativeTtl: duration(get('narinfo-negative-ttl'), 0, 'narinfo-negative-ttl'),
    badSourceCooldown: duration(get('bad-source-cooldown'), 0, 'bad-source-cooldown'),
    shutdownGrace: duration(get('shutdown-grace'), 0, 'shutdown-grace'),
    hedgeDelay: duration(get('hedge-delay'), 0, 'hedge-delay'),
    firstByteTimeout: duration(get('first-byte-timeout'), 0, 'first-byte-timeout'),
    untrustedBudget: duration(get('untrusted-budget'), 0, 'untrusted-budget'),
    cacheSize: size(get('cache-size'), 0, 'cache-size'),
    upstreams,
    mappers: stringList(lists.mapper ?? ['sqlite:'], 'mapper'),
    backends: stringList(lists.backend ?? [], 'backend'),
    trustedPublicKeys: lists['trusted-public-keys'] === undefined
      ? [...new Set(upstreams.flatMap(u => u.trustedPublicKeys))]
      : checkedPublicKeys(stringList(lists['trusted-public-keys'], 'trusted-public-keys')),
    discovery: discovery as Discovery,
    discoveryInterval,
    peerListen: String(get('peer-listen')) === 'off' ? undefined : parseListen(String(get('peer-listen')), 'peer-listen'),
    peers: stringList(lists.peer ?? [], 'peer').map(url => {
      try {
        return normalizePeerUrl(url)
      } catch (err) {
        throw new ConfigError(`peer: ${(err as Error).message}`)
      }
    }),
    peerKey: String(get('peer-key')),
    peerKeyFile: String(get('peer-key-file')),
    peerUploadLimit: size(get('peer-upload-limit'), 0, 'peer-upload-limit'),
    peerMaxRequests: Math.max(1, integer(get('peer-max-requests'), 64, 'peer-max-requests')),
    indexApi: indexApi as IndexApiMode,
    limits: serverLimits(get)
  }
}

function serverLimits (get: (key: string) => unknown): ServerLimits {
  const positive = (n: number, key: string): number => {
    if (n <= 0) throw new ConfigError(`${key} must be positive, got '${String(get(key))}'`)
    return n
  }
  const limits: ServerLimits = {
    headersTimeout: positive(duration(get('header-timeout'), 0, 'header-timeout'), 'header-timeout'),
    requestTimeout: positive(duration(get('request-timeout'), 0, 'request-timeout'), 'request-timeout'),
    keepAliveTimeout: positive(duration(get('keep-alive-timeout'), 0, 'keep-alive-timeout'), 'keep-alive-timeout'),
    maxConnections: positive(integer(get('max-connections'), 0, 'max-connections'), 'max-connections'),
    maxConnectionsPerClient: positive(integer(get('max-connections-per-client'), 0, 'max-connections-per-client'), 'max-connections-per-client')
  }
  // Node would stretch the header timer to the request timer otherwise.
  if (limits.requestTimeout < limits.headersTimeout) {
    throw new ConfigError(`request-timeout (${String(get('request-timeout'))}) must not be shorter than header-timeout (${String(get('header-timeout'))})`)
  }
  return limits
}

function stringList (list: unknown[], key: string): string[] {
  if (!list.every(v => typeof v === 'string')) throw new ConfigError(`${key} must be a list of strings`)
  return list
}

export function envName (key: string): string {
  return `NARSWARM_${key.toUpperCase().replaceAll('-', '_')}`
}

function readToml (file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`)
  }
  try {
    return parseToml(text) as Record<string, unknown>
  } catch (err) {
    throw new ConfigError(`${file} is not valid TOML: ${(err as Error).message}`)
  }
}

function parseUpstreams (list: unknown[]): UpstreamConfig[] {
  const upstreams = list.map((entry, i) => {
    if (typeof entry === 'string') return parseUpstreamSpec(entry)
    if (typeof entry === 'object' && entry !== null) return upstreamFromTable(entry as Record<string, unknown>, `upstream #${i + 1}`)
    throw new ConfigError(`upstream #${i + 1} must be a URL string or a table`)
  })
  const names = new Set<string>()
  for (const u of upstreams) {
    const name = u.name ?? u.url
    if (names.has(name)) throw new ConfigError(`upstream '${name}' is configured twice`)
    names.add(name)
  }
  return upstreams
}

export function parseListen (value: string, key = 'listen'): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(`${key} must be HOST:PORT (e.g. 127.0.0.1:37515 or [::1]:37515)${key === 'peer-listen' ? ' or off' : ''}, got '${value}'`)
  }
  return { host: m[1] || m[2] || '127.0.0.1', port }
}

function defaultStateDir (env: NodeJS.ProcessEnv): string {
  const data = env.XDG_DATA_HOME !== undefined && env.XDG_DATA_HOME !== '' ? env.XDG_DATA_HOME : join(env.HOME ?? homedir(), '.local', 'share')
  return join(data, 'narswarm')
}
