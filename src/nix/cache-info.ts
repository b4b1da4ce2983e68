/**
 * `nix-cache-info`, the file a binary cache serves at its root: which store dir it is for, whether
 * bulk "is it substitutable" queries are welcome, and its priority (lower is preferred). Follows Nix
 * `src/libstore/binary-cache-store.cc` (`BinaryCacheStore::init`): split on LF, skip lines without
 * `:`, the key is the text before the first `:` (untrimmed), the value the trimmed rest; unknown
 * keys are ignored (we keep them in `extra`). Only `WantMassQuery: 1` means true.
 */
import { FormatError } from '../errors.ts'

export interface CacheInfo {
  storeDir?: string
  wantMassQuery: boolean
  priority?: number
  /** Keys Nix does not read, last value winning. */
  extra: Record<string, string>
}

// Nix trims these (its `trim` default set).
const WHITESPACE = /^[ \t\n\r]+|[ \t\n\r]+$/g

export function parseCacheInfo (text: string): CacheInfo {
  const info: CacheInfo = { wantMassQuery: false, extra: {} }
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const name = line.slice(0, colon)
    const value = line.slice(colon + 1).replace(WHITESPACE, '')
    if (name === 'StoreDir') {
      info.storeDir = value
    } else if (name === 'WantMassQuery') {
      info.wantMassQuery = value === '1'
    } else if (name === 'Priority') {
      // Nix uses std::stoi, which throws on a non-number; a leading integer with junk after it is read by stoi, but we refuse it.
      if (!/^[+-]?[0-9]+$/.test(value)) throw new FormatError(`nix-cache-info Priority '${value}' is not an integer`)
      const n = Number(value)
      if (n < -2147483648 || n > 2147483647) throw new FormatError(`nix-cache-info Priority ${value} is out of range`)
      info.priority = n
    } else {
      // defineProperty, so that a key such as `__proto__` is stored like any other.
      Object.defineProperty(info.extra, name, { value, enumerable: true, writable: true, configurable: true })
    }
  }
  return info
}

export function serializeCacheInfo (info: { storeDir?: string, wantMassQuery?: boolean, priority?: number }): string {
  let s = ''
  if (info.storeDir !== undefined) {
    if (/[\n\r]/.test(info.storeDir) || info.storeDir === '') throw new FormatError(`invalid StoreDir '${info.storeDir}'`)
    s += `StoreDir: ${info.storeDir}\n`
  }
  if (info.wantMassQuery !== undefined) s += `WantMassQuery: ${info.wantMassQuery ? 1 : 0}\n`
  if (info.priority !== undefined) {
    if (!Number.isInteger(info.priority) || info.priority < -2147483648 || info.priority > 2147483647) {
      throw new FormatError(`Priority must be a 32-bit integer, got ${info.priority}`)
    }
    s += `Priority: ${info.priority}\n`
  }
  return s
}
