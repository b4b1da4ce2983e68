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
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.ts'
import { checkedPublicKeys, DEFAULT_UPSTREAM, parseUpstreamSpec, upstreamFromTable, type UpstreamConfig } from '../upstream/spec.ts'
import { duration, integer, oneOf, size } from '../util/values.ts'
import { netrcCredentials, parseNetrc } from '../util/netrc.ts'
import { DEFAULT_PEER_PORT } from '../peer/protocol.ts'
import { normalizePeerUrl } from '../peer/table.ts'
import { INDEX_API_MODES, type IndexApiMode } from '../server/index-api.ts'
import { SERVER_LIMIT_DEFAULTS, type ServerLimits } from '../server/limits.ts'
import { DEFAULT_UNTRUSTED_BUDGET } from '../server/substituter.ts'
import { didYouMean, nearest, type OptionTable, type Values } from './args.ts'

export interface Config {
  listen: { host: string, port: number }
  stateDir: string
  priority: number
  logLevel: LogLevel
  logFormat: LogFormat
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

type Kind = 'string' | 'integer' | 'duration' | 'size' | 'log-level' | 'log-format'

/**
 * Top-level scalar settings: key → kind, default and the one line `narswarm help` shows (the
 * README's options table says the same at more length). `upstream` and the other lists are below.
 */
export const SETTINGS: Record<string, { kind: Kind, default: string | number, help?: string }> = {
  listen: { kind: 'string', default: '127.0.0.1:37515', help: 'address to listen on (HOST:PORT, [::1]:PORT)' },
  'state-dir': { kind: 'string', default: '', help: 'where the SQLite state, the chunk store and the spool live' },
  priority: { kind: 'integer', default: 40, help: 'priority advertised in /nix-cache-info (lower is preferred by Nix)' },
  'log-level': { kind: 'log-level', default: 'info', help: LOG_LEVELS.join(', ') },
  'log-format': { kind: 'log-format', default: 'auto', help: 'json, pretty, or auto: pretty on a terminal, else JSON' },
  'narinfo-positive-ttl': { kind: 'duration', default: '30d', help: "how long an upstream's narinfo is reused" },
  'narinfo-negative-ttl': { kind: 'duration', default: '10m', help: 'how long "every upstream said 404" is remembered' },
  'bad-source-cooldown': { kind: 'duration', default: '10m', help: 'how long a source that sent wrong bytes is tried last' },
  'shutdown-grace': { kind: 'duration', default: '10s', help: 'time in-flight transfers get on SIGTERM' },
  'hedge-delay': { kind: 'duration', default: '250ms', help: 'without a first byte from the best NAR source after this long, the next starts too' },
  'first-byte-timeout': { kind: 'duration', default: '30s', help: 'a source without a first byte after this long counts as failed' },
  'untrusted-budget': { kind: 'duration', default: `${DEFAULT_UNTRUSTED_BUDGET / 1000}s`, help: 'time untrusted NAR sources get to deliver a whole verified NAR before the upstreams start too' },
  discovery: { kind: 'string', default: 'mdns', help: 'how LAN peers are found: mdns (DNS-SD, _narswarm._tcp) or off (static peers only)' },
  'discovery-interval': { kind: 'duration', default: '10s', help: 'time between mDNS announcements; a peer silent for three of them is dropped' },
  'peer-listen': { kind: 'string', default: `0.0.0.0:${DEFAULT_PEER_PORT}`, help: 'the peer listener other nodes fetch from (off closes it)' },
  'peer-key': { kind: 'string', default: '', help: 'a group key: peers authenticate every request with HMAC-SHA256; strangers get nothing' },
  'peer-key-file': { kind: 'string', default: '', help: 'a file holding the group key' },
  'peer-upload-limit': { kind: 'size', default: '0', help: 'bytes per second sent to all peers together (10MiB); 0: no limit' },
  'peer-max-requests': { kind: 'integer', default: 64, help: 'peer requests served at once (more get 503)' },
  'netrc-file': { kind: 'string', default: '/etc/nix/netrc', help: "credentials for upstreams whose URL has none, by host, as Nix's netrc-file (read only when present)" },
  'cache-size': { kind: 'size', default: '10GiB', help: 'disk the chunk store may use (500MiB, 2TB; 0 keeps nothing)' },
  'index-api': { kind: 'string', default: 'local', help: "who may read the first mapper's index at /narswarm/v1/: local, public, off" },
  'header-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.headersTimeout / 1000}s`, help: "time a client has to send a request's headers" },
  'request-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.requestTimeout / 1000}s`, help: 'time a client has to send a whole request (not the time a NAR takes to send)' },
  'keep-alive-timeout': { kind: 'duration', default: `${SERVER_LIMIT_DEFAULTS.keepAliveTimeout / 1000}s`, help: 'an idle kept-alive connection is closed after this long' },
  'max-connections': { kind: 'integer', default: SERVER_LIMIT_DEFAULTS.maxConnections, help: 'open connections at most; more are closed as they arrive' },
  'max-connections-per-client': { kind: 'integer', default: SERVER_LIMIT_DEFAULTS.maxConnectionsPerClient, help: 'open connections at most from one non-loopback address' }
}

/** Settings that take a list: repeatable flags, space-separated environment variables, TOML arrays. */
export const LIST_SETTINGS = ['upstream', 'mapper', 'backend', 'trusted-public-keys', 'peer'] as const
type ListSetting = typeof LIST_SETTINGS[number]

/** What `narswarm help` says of each list setting: its value's placeholder, default and meaning. */
export const LIST_SETTING_HELP: Partial<Record<string, { value: string, default: string, help: string }>> = {
  upstream: { value: 'URL', default: 'https://cache.nixos.org', help: 'an upstream binary cache; options go in the query: ?priority=N&trusted-public-keys=name:key&require-sigs=false' },
  mapper: { value: 'SPEC', default: 'sqlite:', help: 'an index of where NARs are, asked in order (schemes below)' },
  backend: { value: 'SPEC', default: 'none', help: "a NAR source for the mappers' locators (schemes below)" },
  'trusted-public-keys': { value: 'KEY', default: "the upstreams' keys", help: 'a key that makes a narinfo found in an index usable' },
  peer: { value: 'URL', default: 'none', help: "a LAN peer's listener, http://host:port (found by mDNS too)" }
}

/** Every key a TOML file may have, every NARSWARM_* variable's key and every setting flag. */
export function settingKeys (): string[] {
  return [...Object.keys(SETTINGS), ...LIST_SETTINGS]
}

const PLACEHOLDERS: Record<string, string> = { listen: 'HOST:PORT', 'state-dir': 'DIR', 'log-level': 'LEVEL', 'netrc-file': 'FILE', 'peer-key-file': 'FILE' }

/**
 * The settings as command-line options (all of them for `serve`; a few for commands that open the
 * index or the backends), with help and defaults from the tables above.
 */
export function settingOptions (keys: readonly string[] = ['config', ...settingKeys()]): OptionTable {
  const table: OptionTable = {}
  for (const key of keys) {
    const setting = SETTINGS[key]
    const list = LIST_SETTING_HELP[key]
    if (key === 'config') {
      table.config = { type: 'string', value: 'FILE', help: 'TOML configuration file (see narswarm.example.toml)' }
    } else if (setting !== undefined) {
      const value = PLACEHOLDERS[key] ?? (setting.kind === 'integer' ? 'N' : setting.kind === 'duration' ? 'DURATION' : setting.kind === 'size' ? 'SIZE' : 'VALUE')
      table[key] = { type: 'string', value, help: setting.help ?? '', default: shownDefault(key) }
    } else if ((LIST_SETTINGS as readonly string[]).includes(key)) {
      table[key] = { type: 'string', multiple: true, value: list?.value ?? 'VALUE', help: list?.help ?? '', ...(list === undefined ? {} : { default: list.default }) }
    } else {
      throw new Error(`no setting '${key}'`)
    }
  }
  return table
}

/** A setting's default as help and the README show it (an empty default means "none"). */
export function shownDefault (key: string): string {
  const value = SETTINGS[key]!.default
  if (value !== '') return String(value)
  return key === 'state-dir' ? '$XDG_DATA_HOME/narswarm' : 'none'
}

/** The parsed values that are settings, as `loadConfig` takes them. */
export function settingFlags (values: Values, keys: readonly string[] = ['config', ...settingKeys()]): Record<string, string | string[] | undefined> {
  const flags: Record<string, string | string[] | undefined> = {}
  for (const key of keys) {
    const v = values[key]
    if (typeof v === 'string' || Array.isArray(v)) flags[key] = v
  }
  return flags
}

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
      else throw new ConfigError(`${file}: unknown key '${key}'${didYouMean(key, settingKeys())}`)
    }
  }

  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('NARSWARM_') || value === undefined || name === 'NARSWARM_CONFIG') continue
    const key = name.slice('NARSWARM_'.length).toLowerCase().replaceAll('_', '-')
    if (isList(key)) lists[key] = value.split(/\s+/).filter(Boolean)
    else if (key in SETTINGS) raw[key] = value
    else {
      const near = nearest(key, [...settingKeys(), 'config'])
      throw new ConfigError(`unknown environment variable ${name}${near === undefined ? '' : ` (did you mean ${envName(near)}?)`}`)
    }
  }

  for (const [key, value] of Object.entries(flags)) {
    if (value === undefined || key === 'config') continue
    if (isList(key)) lists[key] = value as string[]
    else raw[key] = value
  }

  const get = (key: string): unknown => raw[key] ?? SETTINGS[key]!.default
  const logLevel = oneOf(get('log-level'), LOG_LEVELS, 'log-level')
  const discovery = oneOf(get('discovery'), DISCOVERY_MODES, 'discovery')
  const discoveryInterval = duration(get('discovery-interval'), 0, 'discovery-interval')
  if (discoveryInterval < 100) throw new ConfigError(`discovery-interval must be at least 100ms, got '${String(get('discovery-interval'))}'`)
  const logFormat = oneOf(get('log-format'), LOG_FORMATS, 'log-format')
  const stateDir = String(get('state-dir'))
  const indexApi = oneOf(get('index-api'), INDEX_API_MODES, 'index-api')
  const upstreams = withNetrc(parseUpstreams(lists.upstream ?? [DEFAULT_UPSTREAM]), String(get('netrc-file')), raw['netrc-file'] !== undefined)
  return {
    listen: parseListen(String(get('listen'))),
    stateDir: stateDir === '' ? defaultStateDir(env) : resolve(stateDir),
    priority: integer(get('priority'), 40, 'priority'),
    logLevel,
    logFormat,
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
    discovery,
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
    indexApi,
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

/**
 * Upstreams whose URL carries no credentials get those the netrc file holds for their host, as
 * Nix's do. Nix's default file is read only if this user may read it; one named on purpose must
 * be readable and well-formed.
 */
function withNetrc (upstreams: UpstreamConfig[], file: string, named: boolean): UpstreamConfig[] {
  if (file === '') return upstreams
  let entries: ReturnType<typeof parseNetrc>
  try {
    entries = parseNetrc(readFileSync(file, 'utf8'))
  } catch (err) {
    if (!named) return upstreams
    throw new ConfigError(`netrc-file ${file}: ${(err as Error).message}`)
  }
  return upstreams.map(u => {
    const url = new URL(u.url)
    const found = url.username === '' && url.password === '' ? netrcCredentials(entries, url.hostname) : undefined
    if (found === undefined) return u
    url.username = encodeURIComponent(found.login)
    url.password = encodeURIComponent(found.password)
    return { ...u, url: url.toString().replace(/\/+$/, '') }
  })
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
