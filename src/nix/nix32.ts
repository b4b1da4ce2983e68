/**
 * Nix's own base-32 ("nix32"), used for store-path hash parts and for `sha256:<nix32>` hashes.
 *
 * It is not RFC 4648: the bytes are read as one little-endian integer and printed in base 32 with
 * the most significant digit first, over the alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no e, o,
 * u, t). The length for n bytes is floor((8n − 1) / 5) + 1: 20 bytes → 32 chars, 32 → 52.
 * Source: Nix `src/libutil/hash.cc` (`printHash32`, `parseHash32`).
 */
import { FormatError } from '../errors.ts'

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

const DIGIT = new Int8Array(128).fill(-1)
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT[NIX32_ALPHABET.charCodeAt(i)] = i

/** Number of nix32 characters that encode `byteLength` bytes. */
export function nix32Length (byteLength: number): number {
  return Math.floor((byteLength * 8 - 1) / 5) + 1
}

export function encodeNix32 (bytes: Uint8Array): string {
  const n = nix32Length(bytes.length)
  let s = ''
  for (let i = n - 1; i >= 0; i--) {
    const bit = i * 5
    const k = bit >> 3
    const j = bit & 7
    const c = (bytes[k]! >> j) | (k + 1 < bytes.length ? bytes[k + 1]! << (8 - j) : 0)
    s += NIX32_ALPHABET[c & 31]
  }
  return s
}

/** True when `s` uses only nix32 characters (says nothing about the length). */
export function isNix32 (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128 || DIGIT[c] === -1) return false
  }
  return true
}

/**
 * Decodes `s` into `byteLength` bytes. Rejects foreign characters, a wrong length, and set bits
 * beyond the last byte (Nix 2.8 rejects those too, "invalid base-32 hash").
 */
export function decodeNix32 (s: string, byteLength: number): Uint8Array {
  if (s.length !== nix32Length(byteLength)) {
    throw new FormatError(`nix32 string '${s}' has ${s.length} characters, expected ${nix32Length(byteLength)}`)
  }
  const out = new Uint8Array(byteLength)
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - n - 1)
    const digit = code < 128 ? DIGIT[code]! : -1
    if (digit < 0) throw new FormatError(`invalid character '${s[s.length - n - 1]}' in nix32 string '${s}'`)
    const bit = n * 5
    const i = bit >> 3
    const j = bit & 7
    out[i]! |= (digit << j) & 0xff
    const carry = digit >> (8 - j)
    if (i + 1 < byteLength) out[i + 1]! |= carry
    else if (carry !== 0) throw new FormatError(`nix32 string '${s}' has bits beyond ${byteLength} bytes`)
  }
  return out
}
