/**
 * Bencoding (BEP 3), the serialisation of .torrent files and of the info dictionary whose SHA-1 is
 * a torrent's identity. narswarm builds its own info dictionaries rather than relying on a
 * torrent-creation library's defaults, because the info hash is part of the index format: every
 * publisher must produce the same bytes for the same NAR. Strings are byte strings (Uint8Array);
 * text keys and values are accepted as JS strings and encoded as UTF-8. Dictionary keys are
 * written in sorted byte order, as the format requires.
 */
import { FormatError } from '../../errors.ts'

export type BValue = number | string | Uint8Array | BValue[] | { [key: string]: BValue }

const encoder = new TextEncoder()

export function bencode (value: BValue): Uint8Array {
  const parts: Uint8Array[] = []
  write(value, parts)
  return Buffer.concat(parts)
}

function write (value: BValue, parts: Uint8Array[]): void {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new TypeError(`bencode: ${value} is not an integer`)
    parts.push(encoder.encode(`i${value}e`))
  } else if (typeof value === 'string' || value instanceof Uint8Array) {
    const bytes = typeof value === 'string' ? encoder.encode(value) : value
    parts.push(encoder.encode(`${bytes.length}:`), bytes)
  } else if (Array.isArray(value)) {
    parts.push(encoder.encode('l'))
    for (const v of value) write(v, parts)
    parts.push(encoder.encode('e'))
  } else {
    parts.push(encoder.encode('d'))
    const keys = Object.keys(value).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    for (const key of keys) {
      write(key, parts)
      write(value[key]!, parts)
    }
    parts.push(encoder.encode('e'))
  }
}

/**
 * Decodes one bencoded value. Byte strings stay Uint8Array (piece hashes are binary); dictionary
 * keys become JS strings. `raw` reports the byte range of each dictionary value under `rawKey`, so
 * the info dictionary can be hashed exactly as it was written.
 */
export function bdecode (bytes: Uint8Array, rawKey?: string): { value: BValue, raw?: Uint8Array } {
  let pos = 0
  let raw: Uint8Array | undefined
  const fail = (what: string): never => { throw new FormatError(`bencode: ${what} at byte ${pos}`, { position: pos }) }
  const readUntil = (stop: number): string => {
    const end = bytes.indexOf(stop, pos)
    if (end < 0) fail('unterminated number')
    const text = Buffer.from(bytes.subarray(pos, end)).toString('latin1')
    pos = end + 1
    return text
  }
  const read = (depth: number): BValue => {
    if (depth > 64) fail('nesting too deep')
    const c = bytes[pos]
    if (c === undefined) return fail('unexpected end')
    if (c === 0x69) { // i
      pos++
      const text = readUntil(0x65)
      if (!/^(0|-?[1-9]\d*)$/.test(text)) fail(`bad integer '${text}'`)
      return Number(text)
    }
    if (c === 0x6c) { // l
      pos++
      const list: BValue[] = []
      while (bytes[pos] !== 0x65) list.push(read(depth + 1))
      pos++
      return list
    }
    if (c === 0x64) { // d
      pos++
      const dict: Record<string, BValue> = {}
      while (bytes[pos] !== 0x65) {
        const key = read(depth + 1)
        if (!(key instanceof Uint8Array)) return fail('dictionary key is not a string')
        const name = Buffer.from(key).toString('utf8')
        const start = pos
        dict[name] = read(depth + 1)
        if (depth === 0 && name === rawKey) raw = bytes.subarray(start, pos)
      }
      pos++
      return dict
    }
    if (c >= 0x30 && c <= 0x39) {
      const text = readUntil(0x3a)
      if (!/^(0|[1-9]\d*)$/.test(text)) fail('bad string length')
      const end = pos + Number(text)
      if (end > bytes.length) fail('string runs past the end')
      const s = bytes.subarray(pos, end)
      pos = end
      return s
    }
    return fail(`unexpected byte 0x${c.toString(16)}`)
  }
  const value = read(0)
  if (pos !== bytes.length) fail('trailing bytes')
  return raw === undefined ? { value } : { value, raw }
}
