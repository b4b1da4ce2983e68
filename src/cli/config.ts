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
import { duration, integer } from '../util/values.ts'
import { didYouMean, nearest, type OptionTable, type Values } from './args.ts'

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
  upstreams: UpstreamConfig[]
  /** Mapper specs, asked in order. */
  mappers: string[]
  /** Backend specs; the upstreams' own NAR URLs are always the last resort. */
  backends: string[]
  /** Keys that make a narinfo from an index (mapper) usable; default: every upstream's keys. */
  trustedPublicKeys: string[]
}

type Kind = 'string' | 'integer' | 'duration' | 'log-level'

/**
 * Top-level scalar settings: key → kind, default and the one line `narswarm help` shows (the
 * README's options table says the same at more length). `upstream` and the other lists are below.
 */
export const SETTINGS: Record<string, { kind: Kind, default: string | number, help?: string }> = {
  listen: { kind: 'string', default: '127.0.0.1:37515', help: 'address to listen on (HOST:PORT, [::1]:PORT)' },
  'state-dir': { kind: 'string', default: '', help: 'where the SQLite state lives' },
  priority: { kind: 'integer', default: 40, help: 'priority advertised in /nix-cache-info (lower is preferred by Nix)' },
  'log-level': { kind: 'log-level', default: 'info', help: `${LOG_LEVELS.join(', ')}; logs are JSON lines on stderr` },
  'narinfo-positive-ttl': { kind: 'duration', default: '30d', help: "how long an upstream's narinfo is reused" },
  'narinfo-negative-ttl': { kind: 'duration', default: '10m', help: 'how long "every upstream said 404" is remembered' },
  'bad-source-cooldown': { kind: 'duration', default: '10m', help: 'how long a source that sent wrong bytes is tried last' },
  'shutdown-grace': { kind: 'duration', default: '10s', help: 'time in-flight transfers get on SIGTERM' },
  'hedge-delay': { kind: 'duration', default: '250ms', help: 'without a first byte from the best NAR source after this long, the next starts too' },
  'first-byte-timeout': { kind: 'duration', default: '30s', help: 'a source without a first byte after this long counts as failed' }
}

/** Settings that take a list: repeatable flags, space-separated environment variables, TOML arrays. */
export const LIST_SETTINGS = ['upstream', 'mapper', 'backend', 'trusted-public-keys'] as const
type ListSetting = typeof LIST_SETTINGS[number]

/** What `narswarm help` says of each list setting: its value's placeholder, default and meaning. */
export const LIST_SETTING_HELP: Partial<Record<string, { value: string, default: string, help: string }>> = {
  upstream: { value: 'URL', default: 'https://cache.nixos.org', help: 'an upstream binary cache; options go in the query: ?priority=N&trusted-public-keys=name:key&require-sigs=false' },
  mapper: { value: 'SPEC', default: 'sqlite:', help: 'an index of where NARs are, asked in order (schemes below)' },
  backend: { value: 'SPEC', default: 'none', help: "a NAR source for the mappers' locators (schemes below)" },
  'trusted-public-keys': { value: 'KEY', default: "the upstreams' keys", help: 'a key that makes a narinfo found in an index usable' }
}

/** Every key a TOML file may have, every NARSWARM_* variable's key and every setting flag. */
export function settingKeys (): string[] {
  return [...Object.keys(SETTINGS), ...LIST_SETTINGS]
}

const PLACEHOLDERS: Record<string, string> = { listen: 'HOST:PORT', 'state-dir': 'DIR', 'log-level': 'LEVEL' }

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
      const value = PLACEHOLDERS[key] ?? (setting.kind === 'integer' ? 'N' : setting.kind === 'duration' ? 'DURATION' : 'VALUE')
      table[key] = { type: 'string', value, help: setting.help ?? '', default: setting.default === '' ? '$XDG_DATA_HOME/narswarm' : String(setting.default) }
    } else if ((LIST_SETTINGS as readonly string[]).includes(key)) {
      table[key] = { type: 'string', multiple: true, value: list?.value ?? 'VALUE', help: list?.help ?? '', ...(list === undefined ? {} : { default: list.default }) }
    } else {
      throw new Error(`no setting '${key}'`)
    }
  }
  return table
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
  const logLevel = String(get('log-level'))
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`log-level must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`)
  }
  const stateDir = String(get('state-dir'))
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
    upstreams,
    mappers: stringList(lists.mapper ?? ['sqlite:'], 'mapper'),
    backends: stringList(lists.backend ?? [], 'backend'),
    trustedPublicKeys: lists['trusted-public-keys'] === undefined
      ? [...new Set(upstreams.flatMap(u => u.trustedPublicKeys))]
      : checkedPublicKeys(stringList(lists['trusted-public-keys'], 'trusted-public-keys'))
  }
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

export function parseListen (value: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(`listen must be HOST:PORT (e.g. 127.0.0.1:37515 or [::1]:37515), got '${value}'`)
  }
  return { host: m[1] || m[2] || '127.0.0.1', port }
}

function defaultStateDir (env: NodeJS.ProcessEnv): string {
  const data = env.XDG_DATA_HOME !== undefined && env.XDG_DATA_HOME !== '' ? env.XDG_DATA_HOME : join(env.HOME ?? homedir(), '.local', 'share')
  return join(data, 'narswarm')
}
