/**
 * One hash type for every hash Nix prints or parses: NarHash, FileHash, CA hashes, store-path
 * inner hashes. A hash is parsed once at the edge into algorithm + digest bytes and formatted on
 * demand, so no mixed-encoding strings travel inside narswarm.
 *
 * Accepted syntax (Nix `Hash::parseAnyPrefixed`, the same in 2.8, current Nix and Lix):
 * `<algo>:<digest>` where the digest's encoding is chosen by its length — base16 (either case),
 * nix32, or padded base64 — and the SRI form `<algo>-<base64>`. Nix always writes `sha256:<nix32>`.
 */
import { createHash } from 'node:crypto'
import { FormatError } from '../errors.ts'
import { decodeNix32, encodeNix32, nix32Length } from './nix32.ts'

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512'

export const HASH_SIZE: Readonly<Record<HashAlgorithm, number>> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 }

export function isAlgorithm (s: string): s is HashAlgorithm {
  return Object.hasOwn(HASH_SIZE, s)
}

const BASE16 = /^[0-9a-fA-F]*$/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

export class NixHash {
  readonly algorithm: HashAlgorithm
  readonly digest: Uint8Array

  constructor (algorithm: HashAlgorithm, digest: Uint8Array) {
    if (digest.length !== HASH_SIZE[algorithm]) {
      throw new FormatError(`${algorithm} digest must be ${HASH_SIZE[algorithm]} bytes, got ${digest.length}`)
    }
    this.algorithm = algorithm
    this.digest = digest
  }

  /** Parses `algo:digest` (base16, nix32 or base64) or SRI `algo-base64`. */
  static parse (text: string): NixHash {
    const colon = text.indexOf(':')
    const dash = text.indexOf('-')
    if (colon > 0 && (dash < 0 || colon < dash)) {
      const algorithm = text.slice(0, colon)
      if (!isAlgorithm(algorithm)) throw new FormatError(`unknown hash algorithm '${algorithm}' in '${text}'`)
      return NixHash.parseDigest(algorithm, text.slice(colon + 1))
    }
    if (dash > 0) {
      const algorithm = text.slice(0, dash)
      if (!isAlgorithm(algorithm)) throw new FormatError(`unknown hash algorithm '${algorithm}' in '${text}'`)
      return NixHash.fromBase64(algorithm, text.slice(dash + 1), text)
    }
    throw new FormatError(`hash '${text}' does not name its algorithm (expected e.g. 'sha256:…' or 'sha256-…')`)
  }

  /** Parses a bare digest of a known algorithm; the encoding is chosen by length, as Nix does. */
  static parseDigest (algorithm: HashAlgorithm, digest: string): NixHash {
    const size = HASH_SIZE[algorithm]
    if (digest.length === size * 2 && BASE16.test(digest)) {
      return new NixHash(algorithm, Uint8Array.from(Buffer.from(digest, 'hex')))
    }
    if (digest.length === nix32Length(size)) return new NixHash(algorithm, decodeNix32(digest, size))
    if (digest.length === Math.ceil(size / 3) * 4) return NixHash.fromBase64(algorithm, digest, digest)
    throw new FormatError(`'${digest}' is not a ${algorithm} digest in base16, nix32 or base64`)
  }

  /**
   * A digest in nix32 as it appears in a URL (`nar/<NarHash>.nar`); undefined when the string is not
   * one: of another length, or with bits set beyond the digest's (52 nix32 characters hold 260 bits,
   * a sha256 256), so that a route matching the alphabet can answer 404 for it, not fail.
   */
  static fromNix32 (algorithm: HashAlgorithm, digest: string): NixHash | undefined {
    const size = HASH_SIZE[algorithm]
    if (digest.length !== nix32Length(size)) return undefined
    try {
      return new NixHash(algorithm, decodeNix32(digest, size))
    } catch (err) {
      if (err instanceof FormatError) return undefined
      throw err
    }
  }

  private static fromBase64 (algorithm: HashAlgorithm, b64: string, whole: string): NixHash {
    if (!BASE64.test(b64) || b64.length % 4 !== 0) throw new FormatError(`invalid base64 in hash '${whole}'`)
    const bytes = Uint8Array.from(Buffer.from(b64, 'base64'))
    if (bytes.length !== HASH_SIZE[algorithm]) {
      throw new FormatError(`hash '${whole}' decodes to ${bytes.length} bytes, ${algorithm} needs ${HASH_SIZE[algorithm]}`)
    }
    return new NixHash(algorithm, bytes)
  }

  /** Hashes `data` in one go (for small inputs; streams use `createHash` directly). */
  static of (algorithm: HashAlgorithm, data: Uint8Array | string): NixHash {
    return new NixHash(algorithm, Uint8Array.from(createHash(algorithm).update(data).digest()))
  }

  toNix32 (): string { return encodeNix32(this.digest) }
  toBase16 (): string { return Buffer.from(this.digest).toString('hex') }
  toBase64 (): string { return Buffer.from(this.digest).toString('base64') }
  toSri (): string { return `${this.algorithm}-${this.toBase64()}` }

  /** Nix's canonical form: `sha256:<nix32>`. */
  toString (): string { return `${this.algorithm}:${this.toNix32()}` }

  equals (other: NixHash): boolean {
    return this.algorithm === other.algorithm && Buffer.from(this.digest).equals(other.digest)
  }
}
