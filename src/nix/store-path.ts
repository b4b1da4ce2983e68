/**
 * Store paths: `/nix/store/<hashPart>-<name>`, where the hash part is 32 nix32 characters (160 bits)
 * and the name is 1–211 characters of `[A-Za-z0-9+\-._?=]`. This module validates them and computes
 * them the way Nix does: a type string, an inner hash, the store dir and the name are hashed with
 * sha256 and XOR-folded to 20 bytes. Follows Nix `src/libstore/path.cc` (validation) and
 * `store-api.cc` / `store-dir-config.cc` (`makeStorePath`, `makeTextPath`, `makeFixedOutputPath`,
 * `compressHash`). Parsing is stricter than Nix 2.8 where 2.8 is lax: the character after the hash
 * part must be `-`, the path must already be canonical, and names such as `.` or `.-foo` (which
 * current Nix and Lix reject) are refused.
 */
import { createHash } from 'node:crypto'
import { FormatError } from '../errors.ts'
import { NixHash } from './hash.ts'
import { encodeNix32, isNix32 } from './nix32.ts'

export const STORE_DIR = '/nix/store'

/** Length of a store-path hash part in nix32 characters (20 bytes). */
export const HASH_PART_LENGTH = 32

/** Longest name Nix allows (`StorePath::MaxPathLen`). */
export const MAX_NAME_LENGTH = 211

export interface StorePath {
  /** The 32-character nix32 hash part. */
  readonly hashPart: string
  readonly name: string
  /** The full path, `<storeDir>/<hashPart>-<name>`. */
  readonly path: string
  /** `<hashPart>-<name>`, the form narinfo `References` and `Deriver` use. */
  readonly baseName: string
  readonly storeDir: string
}

const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/

export function isHashPart (s: string): boolean {
  return s.length === HASH_PART_LENGTH && isNix32(s)
}

export function isStorePathName (s: string): boolean {
  return nameProblem(s) === undefined
}

function nameProblem (name: string): string | undefined {
  if (name.length === 0) return 'has an empty name'
  if (name.length > MAX_NAME_LENGTH) return `has a name longer than ${MAX_NAME_LENGTH} characters`
  if (!NAME_CHARS.test(name)) {
    const bad = [...name].find(c => !NAME_CHARS.test(c))
    return `has an illegal character ${JSON.stringify(bad)} in its name`
  }
  // These would collide with directory navigation or with the `.`-prefixed temporary names Nix uses.
  if (name === '.' || name === '..') return `has the name '${name}'`
  if (name.startsWith('.-') || name.startsWith('..-')) return `has a name starting with '${name.startsWith('.-') ? '.-' : '..-'}'`
  return undefined
}

/** Parses `<hashPart>-<name>` (no directory). */
export function parseStorePathBaseName (baseName: string, storeDir: string = STORE_DIR): StorePath {
  if (baseName.length < HASH_PART_LENGTH + 2) {
    throw new FormatError(`store path base name '${baseName}' is too short (needs a ${HASH_PART_LENGTH}-character hash, '-' and a name)`)
  }
  const hashPart = baseName.slice(0, HASH_PART_LENGTH)
  if (!isNix32(hashPart)) {
    const bad = [...hashPart].find(c => !isNix32(c))
    throw new FormatError(`store path base name '${baseName}' has an illegal nix32 character ${JSON.stringify(bad)} in its hash part`)
  }
  if (baseName[HASH_PART_LENGTH] !== '-') {
    throw new FormatError(`store path base name '${baseName}' has no '-' after its ${HASH_PART_LENGTH}-character hash part`)
  }
  const name = baseName.slice(HASH_PART_LENGTH + 1)
  const problem = nameProblem(name)
  if (problem !== undefined) throw new FormatError(`store path base name '${baseName}' ${problem}`)
  return { hashPart, name, baseName, path: `${storeDir}/${baseName}`, storeDir }
}

/** Parses a full store path; it must be exactly `<storeDir>/<baseName>` (no `//`, no trailing `/`). */
export function parseStorePath (path: string, storeDir: string = STORE_DIR): StorePath {
  const prefix = storeDir + '/'
  if (!path.startsWith(prefix)) throw new FormatError(`path '${path}' is not in the Nix store '${storeDir}'`)
  const baseName = path.slice(prefix.length)
  if (baseName.includes('/')) throw new FormatError(`path '${path}' is not directly inside the Nix store '${storeDir}'`)
  return parseStorePathBaseName(baseName, storeDir)
}

/** True when `path` is a valid store path in `storeDir`. */
export function isStorePath (path: string, storeDir: string = STORE_DIR): boolean {
  try {
    parseStorePath(path, storeDir)
    return true
  } catch {
    return false
  }
}

/**
 * The store path that `path` lies in (`/nix/store/…-hello/bin/hello` → `/nix/store/…-hello`, as
 * Nix's `toStorePath`); a path not in `storeDir` is returned as it is, for the parser to refuse.
 */
export function toStorePath (path: string, storeDir: string = STORE_DIR): string {
  if (!path.startsWith(`${storeDir}/`)) return path
  const end = path.indexOf('/', storeDir.length + 1)
  return end === -1 ? path : path.slice(0, end)
}

/**
 * Accepts a reference as a full path or as a base name (they cannot be confused: base names have
 * no `/`) and returns it parsed, so callers may pass narinfo `References` entries directly.
 */
export function parseStorePathOrBaseName (ref: string, storeDir: string = STORE_DIR): StorePath {
  return ref.includes('/') ? parseStorePath(ref, storeDir) : parseStorePathBaseName(ref, storeDir)
}

/** XOR-folds a digest to `size` bytes (Nix `compressHash`): byte i lands on i mod size. */
function compressHash (digest: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size)
  for (let i = 0; i < digest.length; i++) out[i % size]! ^= digest[i]!
  return out
}

/**
 * The path for `type`, `innerHash` and `name`: `sha256("<type>:<algo>:<base16>:<storeDir>:<name>")`
 * folded to 160 bits.
 */
export function makeStorePath (type: string, innerHash: NixHash, name: string, storeDir: string = STORE_DIR): string {
  const problem = nameProblem(name)
  if (problem !== undefined) throw new FormatError(`store path name '${name}' is invalid: it ${problem}`)
  const s = `${type}:${innerHash.algorithm}:${innerHash.toBase16()}:${storeDir}:${name}`
  const digest = createHash('sha256').update(s).digest()
  return `${storeDir}/${encodeNix32(compressHash(digest, 20))}-${name}`
}

/** Full paths of `references`, deduplicated and sorted bytewise, as Nix's `StorePathSet` iterates them. */
export function sortedReferencePaths (references: Iterable<string>, storeDir: string): string[] {
  const paths = new Set<string>()
  for (const r of references) paths.add(parseStorePathOrBaseName(r, storeDir).path)
  // Store paths are ASCII, so UTF-16 order is byte order.
  return [...paths].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
}

/** `<type>:<ref path>…[:self]` (Nix `makeType`). */
function makeType (type: string, references: Iterable<string>, hasSelfReference: boolean, storeDir: string): string {
  let s = type
  for (const p of sortedReferencePaths(references, storeDir)) s += ':' + p
  if (hasSelfReference) s += ':self'
  return s
}

/**
 * A text path (`builtins.toFile`, `.drv` files): `sha256OfContents` is the sha256 of the file's bytes.
 * Text paths cannot refer to themselves, so there is no self flag.
 */
export function makeTextPath (name: string, sha256OfContents: NixHash, references: Iterable<string> = [], storeDir: string = STORE_DIR): string {
  if (sha256OfContents.algorithm !== 'sha256') {
    throw new FormatError(`text paths are addressed by sha256, not ${sha256OfContents.algorithm}`)
  }
  return makeStorePath(makeType('text', references, false, storeDir), sha256OfContents, name, storeDir)
}

/**
 * A NAR-hashed sha256 content-addressed path (`nix-store --add`, `fixed:r:sha256`). `references`
 * excludes the path itself; a self-reference is expressed by `hasSelfReference`.
 */
export function makeSourcePath (name: string, narHash: NixHash, references: Iterable<string> = [], hasSelfReference = false, storeDir: string = STORE_DIR): string {
  if (narHash.algorithm !== 'sha256') throw new FormatError(`source paths are addressed by a sha256 NAR hash, not ${narHash.algorithm}`)
  return makeStorePath(makeType('source', references, hasSelfReference, storeDir), narHash, name, storeDir)
}

/** How a fixed-output path's content was hashed: the file's bytes (`flat`), its NAR (`nar`), or as a git object (`git`). */
export type FileIngestionMethod = 'flat' | 'nar' | 'git'

const METHOD_PREFIX: Readonly<Record<FileIngestionMethod, string>> = { flat: '', nar: 'r:', git: 'git:' }

/**
 * A fixed-output path. NAR + sha256 is a source path (and only that kind may have references);
 * every other combination is `output:out` over `sha256("fixed:out:<method prefix><algo>:<base16>:")`.
 */
export function makeFixedOutputPath (
  name: string,
  method: FileIngestionMethod,
  hash: NixHash,
  storeDir: string = STORE_DIR,
  references: Iterable<string> = [],
  hasSelfReference = false
): string {
  if (method === 'nar' && hash.algorithm === 'sha256') return makeSourcePath(name, hash, references, hasSelfReference, storeDir)
  if (method === 'git' && hash.algorithm !== 'sha1' && hash.algorithm !== 'sha256') {
    throw new FormatError(`git-hashed fixed-output paths use sha1 or sha256, not ${hash.algorithm}`)
  }
  if (hasSelfReference || sortedReferencePaths(references, storeDir).length > 0) {
    throw new FormatError(`fixed-output path '${name}' hashed ${method} with ${hash.algorithm} cannot have references`)
  }
  const inner = NixHash.of('sha256', `fixed:out:${METHOD_PREFIX[method]}${hash.algorithm}:${hash.toBase16()}:`)
  return makeStorePath('output:out', inner, name, storeDir)
}
