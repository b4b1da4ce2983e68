/**
 * Validation of scalar configuration values (TOML, environment, flags, URL query options), with
 * messages that name the setting. Environment variables and URL queries deliver strings, TOML
 * delivers typed values; both are accepted.
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError } from '../errors.ts'
import { COMPRESSIONS, type Compression } from '../nix/compression.ts'
import { parseDuration } from './duration.ts'

export function integer (value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback
  const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value
  if (typeof n !== 'number' && typeof n !== 'bigint') throw new ConfigError(`${what} must be an integer, got '${String(value)}'`)
  if (!Number.isSafeInteger(Number(n))) throw new ConfigError(`${what} must be an integer, got '${String(value)}'`)
  return Number(n)
}

export function boolean (value: unknown, fallback: boolean, what: string): boolean {
  if (value === undefined) return fallback
  if (value === true || value === 'true' || value === '1') return true
  if (value === false || value === 'false' || value === '0') return false
  throw new ConfigError(`${what} must be true or false, got '${String(value)}'`)
}

export function duration (value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback
  const ms = parseDuration(value)
  if (ms === undefined) throw new ConfigError(`${what} must be a duration such as 10, "500ms", "30s" or "5m", got '${String(value)}'`)
  return ms
}

/** One of the words in `choices` (`log-level = "debug"`). */
export function oneOf<T extends string> (value: unknown, choices: readonly T[], what: string): T {
  const word = String(value)
  if ((choices as readonly string[]).includes(word)) return word as T
  throw new ConfigError(`${what} must be one of ${choices.join(', ')}, got '${word}'`)
}

/** A NAR compression setting (`compression=zstd`). */
export function compression (value: unknown, fallback: Compression, what: string): Compression {
  if (value === undefined) return fallback
  if (typeof value === 'string' && (COMPRESSIONS as readonly string[]).includes(value)) return value as Compression
  throw new ConfigError(`${what}: unsupported compression '${String(value)}' (compression must be one of ${COMPRESSIONS.join(', ')})`)
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/**
 * A byte count: a number, or `1048576`, `512K`, `500MiB`, `10GiB`, `1.5G`; units are binary
 * wherever narswarm reads a size (`2MB` is 2 MiB), as in Nix's own settings (`min-free = 1G`).
 */
export function parseSize (value: unknown): number | undefined {
  if (typeof value === 'number' || typeof value === 'bigint') {
    const n = Number(value)
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined
  }
  if (typeof value !== 'string') return undefined
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(value.trim())
  if (m === null) return undefined
  const n = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!)
  return Number.isSafeInteger(n) ? n : undefined
}

export function size (value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback
  const n = parseSize(value)
  if (n === undefined) throw new ConfigError(`${what} must be a size such as 500M, 10GiB or 0, got '${String(value)}'`)
  return n
}

/**
 * The ConfigError for a spec whose local path is relative, showing the absolute form it may have
 * meant (against the working directory): a spec takes `scheme:///absolute/path`.
 */
export function relativePathError (what: string, spec: URL, path: string): ConfigError {
  return new ConfigError(`${what}: the path '${path}' is relative; a spec takes an absolute path, e.g. ${spec.protocol}//${pathToFileURL(resolve(path)).pathname}${spec.search}`)
}

/** The path of a spec, percent-decoded; a ConfigError when its encoding is malformed (`%zz`). */
export function specPath (what: string, spec: URL): string {
  try {
    return decodeURIComponent(spec.pathname)
  } catch {
    throw new ConfigError(`${what}: the path '${spec.pathname}' is not valid percent-encoding`)
  }
}
