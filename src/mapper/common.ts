/**
 * What every mapper checks the same way: a spec's local path, name and options, and the locators
 * and narinfos that go into or come out of an index. Malformed index data is a FormatError naming
 * where it was found; a bad spec is a ConfigError.
 */
import { ConfigError, FormatError } from '../errors.ts'
import type { NixHash } from '../nix/hash.ts'
import { NarInfo } from '../nix/narinfo.ts'
import type { Locator } from '../types.ts'
import { duration, relativePathError, specPath } from '../util/values.ts'

/** Validates a narinfo handed to `record`: it must parse, and describe the NAR it is recorded for. */
export function parseRecordedNarInfo (text: string, narHash: NixHash): NarInfo {
  const info = NarInfo.parse(text)
  if (!info.narHash.equals(narHash)) {
    throw new FormatError(`narinfo of ${info.storePath} has NarHash ${info.narHash.toString()}, but it is recorded for ${narHash.toString()}`)
  }
  return info
}

/**
 * Checks one locator as it comes out of (or goes into) an index: `{url, compression, fileSize?}`,
 * unknown keys ignored. Throws FormatError naming `where`.
 */
export function parseLocator (value: unknown, where: string): Locator {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FormatError(`${where}: a locator must be an object`)
  const { url, compression, fileSize } = value as Record<string, unknown>
  if (typeof url !== 'string' || url === '') throw new FormatError(`${where}: locator 'url' must be a non-empty string`)
  if (typeof compression !== 'string' || compression === '') throw new FormatError(`${where}: locator 'compression' must be a non-empty string`)
  if (fileSize === undefined || fileSize === null) return { url, compression }
  if (typeof fileSize !== 'number' || !Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new FormatError(`${where}: locator 'fileSize' must be a non-negative integer`)
  }
  return { url, compression, fileSize }
}

/** A list of locators (see parseLocator). */
export function parseLocators (value: unknown, where: string): Locator[] {
  if (!Array.isArray(value)) throw new FormatError(`${where}: 'locators' must be a list`)
  return value.map((l, i) => parseLocator(l, `${where}, locator ${i + 1}`))
}

/** The name of a mapper in logs: its spec without credentials or query. */
export function specName (spec: URL): string {
  const u = new URL(spec.href)
  u.username = ''
  u.password = ''
  u.search = ''
  u.hash = ''
  return u.href
}

/** The locators of a JSON document `{ "locators": [...] }` (the index API's and the index files' form). */
export function parseLocatorsJson (text: string, where: string): Locator[] {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new FormatError(`${where}: not JSON: ${(err as Error).message}`)
  }
  if (typeof json !== 'object' || json === null) throw new FormatError(`${where}: not a JSON object`)
  return parseLocators((json as Record<string, unknown>).locators, where)
}

/**
 * The start of every mapper spec's parse: its name, the `mapper '<name>'` that begins its error
 * messages, and checks of its scheme (one of `protocols`, e.g. 'folder:'; `expected` says what was
 * wanted) and of its option names.
 */
export function mapperSpec (spec: URL, protocols: readonly string[], known: readonly string[], expected = `a ${protocols[0]} spec`): { name: string, what: string } {
  const name = specName(spec)
  const what = `mapper '${name}'`
  if (!protocols.includes(spec.protocol)) throw new ConfigError(`${what}: expected ${expected}`)
  checkOptions(spec, what, known)
  return { name, what }
}

/** The `timeout` option of a mapper that waits on something else: a positive duration, in ms. */
export function timeoutOption (spec: URL, what: string, fallback: number): number {
  const timeout = duration(spec.searchParams.get('timeout') ?? undefined, fallback, `${what}: option 'timeout'`)
  if (timeout <= 0) throw new ConfigError(`${what}: option 'timeout' must be more than 0`)
  return timeout
}

/** The absolute local path of a `scheme:///abs/path` spec; `what` names the spec in errors. */
export function localPath (spec: URL, what: string, optional: boolean): string | undefined {
  if (spec.host !== '' || spec.username !== '' || spec.password !== '') {
    throw new ConfigError(`${what}: a host ('${spec.host}') is not allowed; write ${spec.protocol}///absolute/path`)
  }
  if (spec.hash !== '') throw new ConfigError(`${what}: a fragment ('${spec.hash}') is not allowed`)
  const path = specPath(what, spec)
  if (path === '') {
    if (optional) return undefined
    throw new ConfigError(`${what}: the path is missing; write ${spec.protocol}///absolute/path`)
  }
  if (!path.startsWith('/')) throw relativePathError(what, spec, path)
  if (path.includes('\0')) throw new ConfigError(`${what}: the path contains a NUL byte`)
  return path
}

/** Throws ConfigError for a query option outside `known`. */
export function checkOptions (spec: URL, what: string, known: readonly string[]): void {
  for (const key of new Set(spec.searchParams.keys())) {
    if (!known.includes(key)) {
      throw new ConfigError(`${what}: unknown option '${key}'${known.length === 0 ? ' (this mapper takes no options)' : ` (known: ${known.join(', ')})`}`)
    }
  }
}
