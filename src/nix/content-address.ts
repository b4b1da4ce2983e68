/**
 * Content addresses: the narinfo `CA` field (`text:sha256:<h>`, `fixed:sha256:<h>`, `fixed:r:<algo>:<h>`,
 * `fixed:git:<algo>:<h>`). A path whose store path can be recomputed from its CA, name and references
 * proves its own integrity, so Nix accepts it without a signature ("unsigned CA paths"). Follows Nix
 * `src/libstore/content-address.cc` (`parseContentAddress`, `renderContentAddress`) and
 * `path-info.cc` (`ValidPathInfo::isContentAddressed`, which moves a self-reference out of the
 * reference set before recomputing). `fixed:git:` is current Nix's; 2.8 rejects it, but we accept it
 * so narinfos from newer caches pass through.
 */
import { FormatError } from '../errors.ts'
import { isAlgorithm, NixHash } from './hash.ts'
import {
  STORE_DIR, makeFixedOutputPath, makeTextPath, parseStorePath, parseStorePathOrBaseName,
  type FileIngestionMethod
} from './store-path.ts'

export type ContentAddress =
  | { readonly type: 'text', readonly hash: NixHash }
  | { readonly type: 'fixed', readonly method: FileIngestionMethod, readonly hash: NixHash }

/** Parses a non-empty CA string; the digest may be base16, nix32 or base64 (chosen by length), as in Nix. */
export function parseContentAddress (text: string): ContentAddress {
  const colon = text.indexOf(':')
  if (colon < 0) throw new FormatError(`content address '${text}' is not of the form '<prefix>:<rest>'`)
  const prefix = text.slice(0, colon)
  let rest = text.slice(colon + 1)
  let method: FileIngestionMethod = 'flat'
  if (prefix === 'fixed') {
    if (rest.startsWith('r:')) { method = 'nar'; rest = rest.slice(2) } else if (rest.startsWith('git:')) { method = 'git'; rest = rest.slice(4) }
  } else if (prefix !== 'text') {
    throw new FormatError(`content address '${text}' has the unknown prefix '${prefix}' (expected 'text' or 'fixed')`)
  }
  const algoEnd = rest.indexOf(':')
  if (algoEnd < 0) throw new FormatError(`content address '${text}' has no '<algo>:<hash>' part`)
  const algorithm = rest.slice(0, algoEnd)
  if (!isAlgorithm(algorithm)) throw new FormatError(`content address '${text}' has the unknown hash algorithm '${algorithm}'`)
  if (prefix === 'text' && algorithm !== 'sha256') {
    throw new FormatError(`text content address '${text}' must use sha256, not ${algorithm}`)
  }
  const hash = NixHash.parseDigest(algorithm, rest.slice(algoEnd + 1))
  return prefix === 'text' ? { type: 'text', hash } : { type: 'fixed', method, hash }
}

/** The canonical form, `text:sha256:<nix32>` / `fixed:[r:|git:]<algo>:<nix32>`, as Nix writes it. */
export function renderContentAddress (ca: ContentAddress): string {
  if (ca.type === 'text') return `text:${ca.hash.toString()}`
  const method = ca.method === 'nar' ? 'r:' : ca.method === 'git' ? 'git:' : ''
  return `fixed:${method}${ca.hash.toString()}`
}

/**
 * The store path that `ca`, `name` and `references` (full paths or base names, the path itself
 * excluded) determine. A self-reference is passed as `hasSelfReference`; only NAR-hashed sha256
 * paths may have one. Throws FormatError for a combination that no valid path can have, such as a
 * flat-hashed path with references.
 */
export function storePathFromContentAddress (
  name: string,
  ca: ContentAddress | string,
  references: Iterable<string> = [],
  storeDir: string = STORE_DIR,
  hasSelfReference = false
): string {
  const parsed = typeof ca === 'string' ? parseContentAddress(ca) : ca
  if (parsed.type === 'text') {
    if (hasSelfReference) throw new FormatError(`text path '${name}' cannot refer to itself`)
    return makeTextPath(name, parsed.hash, references, storeDir)
  }
  return makeFixedOutputPath(name, parsed.method, parsed.hash, storeDir, references, hasSelfReference)
}

/**
 * The NarHash a content address fixes, or undefined when it fixes none. `fixed:r:sha256:X` is the
 * sha256 of the NAR itself, so the NarHash must be X (Nix refuses the download otherwise: "ca hash
 * mismatch"). `text:` and flat `fixed:` hash the file's contents, `fixed:git:` a git object, and
 * `fixed:r:` with another algorithm cannot be compared with a sha256 NarHash without the NAR.
 */
export function narHashOfContentAddress (ca: ContentAddress | string): NixHash | undefined {
  const parsed = typeof ca === 'string' ? parseContentAddress(ca) : ca
  if (parsed.type === 'fixed' && parsed.method === 'nar' && parsed.hash.algorithm === 'sha256') return parsed.hash
  return undefined
}

/** What `checkContentAddress` needs of a narinfo (or any path info). */
export interface ContentAddressClaim {
  /** Full store path. */
  storePath: string
  /** The CA field; empty or absent means no claim. */
  ca?: string | undefined
  /** References as base names or full paths; may include the path itself. */
  references: readonly string[]
}

/**
 * Whether the claim's CA, name and references reproduce its store path: `'valid'`, `'none'` when
 * there is no CA, or `'mismatch'` with the reason. Never throws on a bad claim, because Nix treats
 * a false claim as "not content-addressed" and falls back to signatures.
 */
export function checkContentAddress (
  claim: ContentAddressClaim,
  storeDir: string = STORE_DIR
): { status: 'valid' | 'none' } | { status: 'mismatch', reason: string } {
  if (claim.ca === undefined || claim.ca === '') return { status: 'none' }
  try {
    const self = parseStorePath(claim.storePath, storeDir)
    const others: string[] = []
    let hasSelfReference = false
    for (const r of claim.references) {
      const ref = parseStorePathOrBaseName(r, storeDir)
      if (ref.path === self.path) hasSelfReference = true
      else others.push(ref.path)
    }
    const computed = storePathFromContentAddress(self.name, claim.ca, others, storeDir, hasSelfReference)
    if (computed === self.path) return { status: 'valid' }
    return { status: 'mismatch', reason: `path '${self.path}' claims to be content-addressed (${claim.ca}) but that gives '${computed}'` }
  } catch (err) {
    if (err instanceof FormatError) return { status: 'mismatch', reason: `path '${claim.storePath}' has an unusable content address: ${err.message}` }
    throw err
  }
}
