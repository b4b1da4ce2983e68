/**
 * How an upstream is described: a URL whose query holds narswarm's options for it, e.g.
 * `https://cache.nixos.org?priority=40&trusted-public-keys=cache.nixos.org-1:6NCH…`, or the same
 * keys as a TOML table. Options are removed from the URL before it is used; an unknown option is
 * an error (a typo must not silently turn signature checks off).
 */
import { ConfigError } from '../errors.ts'
import { parsePublicKey } from '../nix/signature.ts'
import { boolean, duration, integer } from '../util/values.ts'

export interface UpstreamConfig {
  url: string
  name?: string
  /** Lower is preferred, as in Nix. */
  priority: number
  trustedPublicKeys: string[]
  requireSigs: boolean
  connectTimeout: number
  /** Milliseconds to wait for a narinfo's response headers. */
  narinfoTimeout: number
  /** Milliseconds to wait for a NAR's response headers. */
  narTimeout: number
  /** Milliseconds a body may stall before the transfer is abandoned. */
  stallTimeout: number
  connections: number
}

export const CACHE_NIXOS_ORG_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='

export const UPSTREAM_DEFAULTS: Omit<UpstreamConfig, 'url' | 'trustedPublicKeys'> = {
  priority: 50,
  requireSigs: true,
  connectTimeout: 5_000,
  narinfoTimeout: 10_000,
  narTimeout: 30_000,
  stallTimeout: 60_000,
  connections: 32
}

export const DEFAULT_UPSTREAM = `https://cache.nixos.org?trusted-public-keys=${CACHE_NIXOS_ORG_KEY}`

/** Keys accepted both in the URL query and in a TOML `[[upstream]]` table. */
const OPTION_KEYS = ['name', 'priority', 'trusted-public-keys', 'require-sigs', 'connect-timeout',
  'narinfo-timeout', 'nar-timeout', 'stall-timeout', 'connections'] as const

export function parseUpstreamSpec (spec: string): UpstreamConfig {
  let url: URL
  try {
    url = new URL(spec)
  } catch {
    throw new ConfigError(`upstream '${spec}' is not a URL (expected e.g. https://cache.nixos.org?trusted-public-keys=…)`)
  }
  // Parsed by hand: URLSearchParams would turn the '+' of base64 keys into spaces. Like Nix's own
  // store-URL parser, only percent-escapes are decoded.
  const options: Record<string, unknown> = {}
  for (const pair of url.search.slice(1).split('&').filter(Boolean)) {
    const eq = pair.indexOf('=')
    const key = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq))
    const value = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1))
    if (key === 'trusted-public-keys' && typeof options[key] === 'string') options[key] += ` ${value}`
    else options[key] = value
  }
  url.search = ''
  return upstreamFromTable({ ...options, url: url.toString() }, `upstream '${url.origin}'`)
}

/** Validates one upstream given as a table (TOML) or the options of a spec URL. */
export function upstreamFromTable (table: Record<string, unknown>, where: string): UpstreamConfig {
  for (const key of Object.keys(table)) {
    if (key !== 'url' && !(OPTION_KEYS as readonly string[]).includes(key)) {
      throw new ConfigError(`${where}: unknown option '${key}' (known: url, ${OPTION_KEYS.join(', ')})`)
    }
  }
  const rawUrl = table.url
  if (typeof rawUrl !== 'string') throw new ConfigError(`${where}: 'url' is required`)
  let url: URL
  try { url = new URL(rawUrl) } catch { throw new ConfigError(`${where}: '${rawUrl}' is not a URL`) }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`${where}: only http:// and https:// upstreams are supported, not '${url.protocol}'`)
  }
  const config: UpstreamConfig = {
    ...UPSTREAM_DEFAULTS,
    url: url.toString().replace(/\/+$/, ''),
    trustedPublicKeys: keyList(table['trusted-public-keys'], where),
    priority: integer(table.priority, UPSTREAM_DEFAULTS.priority, `${where}: priority`),
    requireSigs: boolean(table['require-sigs'], true, `${where}: require-sigs`),
    connectTimeout: duration(table['connect-timeout'], UPSTREAM_DEFAULTS.connectTimeout, `${where}: connect-timeout`),
    narinfoTimeout: duration(table['narinfo-timeout'], UPSTREAM_DEFAULTS.narinfoTimeout, `${where}: narinfo-timeout`),
    narTimeout: duration(table['nar-timeout'], UPSTREAM_DEFAULTS.narTimeout, `${where}: nar-timeout`),
    stallTimeout: duration(table['stall-timeout'], UPSTREAM_DEFAULTS.stallTimeout, `${where}: stall-timeout`),
    connections: integer(table.connections, UPSTREAM_DEFAULTS.connections, `${where}: connections`)
  }
  if (typeof table.name === 'string') config.name = table.name
  if (config.requireSigs && config.trustedPublicKeys.length === 0) {
    throw new ConfigError(`${where}: require-sigs is on but no trusted-public-keys are given; add the cache's key, or set require-sigs = false to trust it blindly`)
  }
  return config
}

function keyList (value: unknown, where: string): string[] {
  if (value === undefined) return []
  const list = Array.isArray(value) ? value : typeof value === 'string' ? value.split(/[\s,]+/).filter(Boolean) : undefined
  if (list === undefined || !list.every(k => typeof k === 'string')) throw new ConfigError(`${where}: trusted-public-keys must be a list of 'name:base64' keys`)
  return checkedPublicKeys(list, `${where}: `)
}

/** `keys`, each checked to be a `name:base64` public key; `prefix` starts the error message. */
export function checkedPublicKeys (keys: string[], prefix = ''): string[] {
  for (const k of keys) {
    try { parsePublicKey(k) } catch (err) { throw new ConfigError(`${prefix}trusted public key '${k}': ${(err as Error).message}`) }
  }
  return keys
}
