/**
 * Nix's ed25519 keys and narinfo signatures. A key or signature is `<name>:<base64>`: public keys
 * carry 32 bytes, secret keys 64 (the seed followed by the public key, libsodium's layout),
 * signatures 64. What is signed is the fingerprint `1;<storePath>;<narHash>;<narSize>;<refs>`, which
 * covers StorePath, NarHash, NarSize and References only, so URL, Compression, FileHash and FileSize
 * can be rewritten under an existing signature. Follows Nix `src/libutil/crypto.cc` (2.8; now
 * `signature/local-keys.cc`: `SecretKey`, `PublicKey`, `verifyDetached`) and `path-info.cc`
 * (`ValidPathInfo::fingerprint`, `checkSignatures`). As in Nix, a signature by an unknown key name
 * is ignored, and the first trusted key with a given name is the one used.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import { FormatError, SignatureError } from '../errors.ts'
import { NixHash } from './hash.ts'
import { checkContentAddress } from './content-address.ts'
import { STORE_DIR, parseStorePath, sortedReferencePaths } from './store-path.ts'
import type { NarInfo } from './narinfo.ts'

export interface PublicKey {
  readonly name: string
  /** The raw 32-byte ed25519 public key. */
  readonly bytes: Uint8Array
  readonly keyObject: KeyObject
  /** `name:base64`. */
  readonly text: string
}

export interface SecretKey {
  readonly name: string
  /** The 32-byte seed. */
  readonly seed: Uint8Array
  readonly keyObject: KeyObject
  readonly publicKey: PublicKey
  /** `name:base64(seed ‖ public)`. */
  readonly text: string
}

/** Trusted keys as parsed objects or `name:base64` strings, or a map from name to key. */
export type TrustedKeys = Iterable<PublicKey | string> | ReadonlyMap<string, PublicKey>

const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

function splitNamed (text: string, what: string): { name: string, bytes: Buffer } {
  const colon = text.indexOf(':')
  // Never echo secret key material into error messages: they end up in logs.
  if (colon < 0) throw new FormatError(`${what}${what === 'secret key' ? '' : ` '${text}'`} is not of the form '<name>:<base64>'`)
  if (colon === 0) throw new FormatError(`${what} has an empty name`)
  const name = text.slice(0, colon)
  const b64 = text.slice(colon + 1)
  if (b64 === '') throw new FormatError(`${what} '${name}' has no key material after ':'`)
  if (!BASE64.test(b64) || b64.length % 4 !== 0) throw new FormatError(`${what} '${name}' is not valid base64`)
  return { name, bytes: Buffer.from(b64, 'base64') }
}

function publicKeyFromBytes (name: string, bytes: Uint8Array): PublicKey {
  const keyObject = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, bytes]), format: 'der', type: 'spki' })
  return Object.freeze({ name, bytes: Uint8Array.from(bytes), keyObject, text: `${name}:${Buffer.from(bytes).toString('base64')}` })
}

export function parsePublicKey (text: string): PublicKey {
  const { name, bytes } = splitNamed(text.trim(), 'public key')
  if (bytes.length !== 32) throw new SignatureError(`public key '${name}' is ${bytes.length} bytes, an ed25519 public key is 32`)
  return publicKeyFromBytes(name, bytes)
}

export function parseSecretKey (text: string): SecretKey {
  const { name, bytes } = splitNamed(text.trim(), 'secret key')
  if (bytes.length !== 64) throw new SignatureError(`secret key '${name}' is ${bytes.length} bytes, an ed25519 secret key is 64 (seed and public key)`)
  const seed = bytes.subarray(0, 32)
  const keyObject = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' })
  const derived = Buffer.from(createPublicKey(keyObject).export({ format: 'der', type: 'spki' })).subarray(SPKI_PREFIX.length)
  if (!derived.equals(bytes.subarray(32))) throw new SignatureError(`secret key '${name}' is corrupt: its public half does not belong to its seed`)
  const publicKey = publicKeyFromBytes(name, derived)
  return Object.freeze({ name, seed: Uint8Array.from(seed), keyObject, publicKey, text: `${name}:${bytes.toString('base64')}` })
}

/** A fresh key pair in Nix's formats, as `nix key generate-secret` / `convert-secret-to-public` print them. */
export function generateSecretKey (name: string): { secret: string, public: string } {
  if (name === '' || name.includes(':')) throw new FormatError(`key name '${name}' must be non-empty and must not contain ':'`)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const seed = Buffer.from(privateKey.export({ format: 'der', type: 'pkcs8' })).subarray(PKCS8_PREFIX.length)
  const pub = Buffer.from(publicKey.export({ format: 'der', type: 'spki' })).subarray(SPKI_PREFIX.length)
  return { secret: `${name}:${Buffer.concat([seed, pub]).toString('base64')}`, public: `${name}:${pub.toString('base64')}` }
}

export function publicKeyOf (secretKey: string | SecretKey): string {
  return (typeof secretKey === 'string' ? parseSecretKey(secretKey) : secretKey).publicKey.text
}

export interface FingerprintInput {
  /** Full store path. */
  storePath: string
  narHash: NixHash | string
  narSize: number
  /** Base names or full paths. */
  references: Iterable<string>
  storeDir?: string
}

/** `1;<storePath>;<algo>:<nix32 narHash>;<narSize>;<sorted full reference paths joined by ','>`. */
export function fingerprint ({ storePath, narHash, narSize, references, storeDir = STORE_DIR }: FingerprintInput): string {
  const path = parseStorePath(storePath, storeDir).path
  if (narSize === 0) throw new FormatError(`cannot compute the fingerprint of '${path}' because its NarSize is 0 (unknown)`)
  if (!Number.isSafeInteger(narSize) || narSize < 0) throw new FormatError(`NarSize of '${path}' must be a positive integer, got ${narSize}`)
  const hash = typeof narHash === 'string' ? NixHash.parse(narHash) : narHash
  return `1;${path};${hash.toString()};${narSize};${sortedReferencePaths(references, storeDir).join(',')}`
}

export function narInfoFingerprint (narInfo: NarInfo): string {
  return fingerprint({
    storePath: narInfo.storePath,
    narHash: narInfo.narHash,
    narSize: narInfo.narSize,
    references: narInfo.references,
    storeDir: narInfo.storeDir
  })
}

/** `narInfo` with a signature by each of `secretKeys` added after the ones it has. */
export function signNarInfo (narInfo: NarInfo, ...secretKeys: Array<SecretKey | string>): NarInfo {
  const fp = narInfoFingerprint(narInfo)
  return narInfo.withSigs(secretKeys.map(key => sign(key, fp)))
}

/** `name:base64(ed25519 signature of the fingerprint)`. */
export function sign (secretKey: SecretKey | string, fingerprintText: string): string {
  const key = typeof secretKey === 'string' ? parseSecretKey(secretKey) : secretKey
  return `${key.name}:${edSign(null, Buffer.from(fingerprintText), key.keyObject).toString('base64')}`
}

/**
 * Name → key, the first key of each name winning (Nix inserts with `emplace`). Callers that check
 * many signatures build the map once and pass it.
 */
export function trustedKeyMap (trustedKeys: TrustedKeys): ReadonlyMap<string, PublicKey> {
  if (trustedKeys instanceof Map) return trustedKeys
  const map = new Map<string, PublicKey>()
  for (const k of trustedKeys as Iterable<PublicKey | string>) {
    const key = typeof k === 'string' ? parsePublicKey(k) : k
    if (!map.has(key.name)) map.set(key.name, key)
  }
  return map
}

export type SignatureVerdict = 'valid' | 'invalid' | 'untrusted-key'

function check (sig: string, fp: string, keys: ReadonlyMap<string, PublicKey>): { verdict: SignatureVerdict, problem?: string } {
  const colon = sig.indexOf(':')
  // Nix splits at the first ':' and reads a missing or leading one as the (never trusted) empty name.
  const name = colon <= 0 ? '' : sig.slice(0, colon)
  const key = keys.get(name)
  if (key === undefined) return { verdict: 'untrusted-key' }
  const b64 = sig.slice(colon + 1)
  if (!BASE64.test(b64) || b64.length % 4 !== 0) return { verdict: 'invalid', problem: `signature by '${name}' is not valid base64` }
  const bytes = Buffer.from(b64, 'base64')
  if (bytes.length !== 64) return { verdict: 'invalid', problem: `signature by '${name}' is ${bytes.length} bytes, not 64` }
  if (!edVerify(null, Buffer.from(fp), key.keyObject, bytes)) return { verdict: 'invalid', problem: `signature by '${name}' does not match the fingerprint` }
  return { verdict: 'valid' }
}

/** Checks one `name:base64` signature of `fingerprintText`. */
export function verifySignature (sig: string, fingerprintText: string, trustedKeys: TrustedKeys): SignatureVerdict {
  return check(sig, fingerprintText, trustedKeyMap(trustedKeys)).verdict
}

export interface NarInfoVerification {
  /** True when at least one signature by a trusted key is valid, or the path proves itself by its CA. */
  valid: boolean
  /** Names of the trusted keys whose signatures are valid. */
  validKeyNames: string[]
  /** True when the `CA` field, name and references reproduce the store path (Nix then needs no signature). */
  contentAddressed: boolean
  /** One line per bad signature from a trusted key, and per false CA claim. */
  problems: string[]
}

/**
 * Nix's check: every `Sig` by a trusted key name is verified against the fingerprint, signatures by
 * other names are ignored, and a valid CA claim counts as signed (`checkSignatures`). Where Nix
 * throws on a trusted-name signature whose payload is not 64 bytes, this records a problem instead.
 */
export function verifyNarInfo (narInfo: NarInfo, trustedKeys: TrustedKeys): NarInfoVerification {
  const keys = trustedKeyMap(trustedKeys)
  const fp = narInfoFingerprint(narInfo)
  const validKeyNames: string[] = []
  const problems: string[] = []
  for (const sig of narInfo.sigs) {
    const { verdict, problem } = check(sig, fp, keys)
    if (verdict === 'valid') {
      const name = sig.slice(0, sig.indexOf(':'))
      if (!validKeyNames.includes(name)) validKeyNames.push(name)
    } else if (problem !== undefined) {
      problems.push(problem)
    }
  }
  const ca = checkContentAddress(narInfo, narInfo.storeDir)
  if (ca.status === 'mismatch') problems.push(ca.reason)
  const contentAddressed = ca.status === 'valid'
  return { valid: contentAddressed || validKeyNames.length > 0, validKeyNames, contentAddressed, problems }
}
