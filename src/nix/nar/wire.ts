/**
 * The pieces of the NAR wire format shared by the reader, the writer and the listing: the magic,
 * the entry-name rules and the bytewise order Nix uses for entries (`std::string <`, unsigned
 * bytes), from Nix `src/libutil/archive.cc`.
 */

export const Utf8 = new TextDecoder('utf-8')
const encoder = new TextEncoder()

export function utf8 (s: string): Uint8Array {
  return encoder.encode(s)
}

export const NAR_MAGIC = utf8('nix-archive-1')

/** Bytewise comparison, as C++ `std::string <`; JS string order differs for non-ASCII names. */
export function compareBytes (a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!
    if (d !== 0) return d
  }
  return a.length - b.length
}

/** Why `name` cannot be a directory entry, or undefined when it can. */
export function checkName (name: Uint8Array, maxLength: number): string | undefined {
  if (name.length === 0) return 'empty entry name'
  if (name.length > maxLength) return `entry name longer than ${maxLength} bytes`
  if (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e))) return 'entry name is "." or ".."'
  if (name.includes(0x2f)) return 'entry name contains "/"'
  if (name.includes(0)) return 'entry name contains NUL'
  return undefined
}
