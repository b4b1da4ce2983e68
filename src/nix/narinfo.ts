/**
 * The narinfo file (`<hashPart>.narinfo`): one `Key: value` line per field describing a store path
 * and where its NAR lives. A NarInfo keeps every line, known or not, in order and with its raw value,
 * so an unmodified one serializes back byte for byte and the signed fields can never drift when we
 * rewrite the unsigned ones (URL, Compression, FileHash, FileSize). Follows Nix
 * `src/libstore/nar-info.cc` (`NarInfo::NarInfo`, `NarInfo::to_string`). Parsing is stricter than
 * Nix wherever Nix would silently misread or where a newer Nix would refuse the file: a line must
 * have `: `, no CR, no blank line, a final LF; references, deriver, hashes, sizes, `Sig` syntax
 * (as Nix ≥2.34) and `Compression` names (as Nix ≥2.35) are checked; `References` and `CA` may
 * appear once. Other duplicated keys: the last one wins, as in Nix.
 */
import { FormatError } from '../errors.ts'
import { NixHash } from './hash.ts'
import { parseContentAddress } from './content-address.ts'
import { STORE_DIR, parseStorePath, parseStorePathBaseName, parseStorePathOrBaseName, type StorePath } from './store-path.ts'

export interface NarInfoLine {
  readonly key: string
  readonly value: string
}

/** Compression names current Nix accepts; older Nix auto-detects, so these are safe everywhere. */
export const COMPRESSIONS: ReadonlySet<string> = new Set([
  'none', 'br', 'bzip2', 'compress', 'grzip', 'gzip', 'lrzip', 'lz4', 'lzip', 'lzma', 'lzop', 'xz', 'zstd'
])

/** Fields for `NarInfo.build`. References and deriver may be base names or full paths. */
export interface NarInfoFields {
  storePath: string
  url: string
  compression: string
  fileHash?: NixHash | string | undefined
  fileSize?: number | undefined
  narHash: NixHash | string
  narSize: number
  references?: readonly string[]
  deriver?: string | undefined
  sigs?: readonly string[]
  ca?: string | undefined
}

export interface NarInfoTransport {
  url: string
  compression: string
  fileHash?: NixHash | string | undefined
  fileSize?: number | undefined
}

const SIZE = /^[0-9]+$/
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

/** Checks `name:base64` with a non-empty name and payload, the syntax Nix ≥2.34 insists on. */
export function sigSyntaxProblem (sig: string): string | undefined {
  const colon = sig.indexOf(':')
  if (colon <= 0) return `signature '${sig}' has no key name before ':'`
  const payload = sig.slice(colon + 1)
  if (!BASE64.test(payload) || payload.length % 4 !== 0) return `signature '${sig}' has an invalid base64 payload`
  return undefined
}

function parseSize (value: string, what: string): number {
  if (!SIZE.test(value)) throw new Error(`${what} '${value}' is not a decimal number`)
  const n = Number(value)
  if (n > Number.MAX_SAFE_INTEGER) throw new Error(`${what} ${value} is larger than ${Number.MAX_SAFE_INTEGER}`)
  return n
}

function checkSizeValue (n: number, what: string): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new FormatError(`${what} must be a non-negative safe integer, got ${n}`)
  return String(n)
}

function hashText (h: NixHash | string, what: string): string {
  if (typeof h !== 'string') return h.toString()
  try {
    NixHash.parse(h)
  } catch (err) {
    throw new FormatError(`${what}: ${(err as Error).message}`)
  }
  return h
}

export class NarInfo {
  /** Every line in order, with raw values. */
  readonly lines: readonly NarInfoLine[]
  readonly storeDir: string
  readonly storePathParsed: StorePath
  readonly url: string
  /** The raw `Compression` value, or undefined when the line is absent. */
  readonly rawCompression: string | undefined
  readonly fileHash: NixHash | undefined
  readonly fileSize: number | undefined
  readonly narHash: NixHash
  readonly narSize: number
  /** Base names, deduplicated, in file order. */
  readonly references: readonly string[]
  /** Base name of the deriver; `unknown-deriver` is read as none. */
  readonly deriver: string | undefined
  /** Raw `Sig` values, deduplicated, in file order. */
  readonly sigs: readonly string[]
  /** The `CA` value; an empty one is read as none. */
  readonly ca: string | undefined

  private constructor (lines: readonly NarInfoLine[], storeDir: string) {
    this.lines = Object.freeze(lines.map(l => Object.freeze({ key: l.key, value: l.value })))
    this.storeDir = storeDir
    let storePath: StorePath | undefined
    let url: string | undefined
    let rawCompression: string | undefined
    let fileHash: NixHash | undefined
    let fileSize: number | undefined
    let narHash: NixHash | undefined
    let narSize: number | undefined
    let references: string[] | undefined
    let deriver: string | undefined
    const sigs: string[] = []
    let ca: string | undefined
    let caSeen = false

    this.lines.forEach(({ key, value }, i) => {
      const where = `narinfo line ${i + 1} (${key})`
      try {
        if (key === '' || key.includes(':') || key.includes('\n') || key.includes('\r')) throw new Error(`invalid key ${JSON.stringify(key)}`)
        if (value.includes('\n') || value.includes('\r')) throw new Error('value contains a line break or carriage return')
        switch (key) {
          case 'StorePath': storePath = parseStorePath(value, storeDir); break
          case 'URL': url = value; break
          case 'Compression':
            if (value !== '' && !COMPRESSIONS.has(value)) throw new Error(`unknown compression '${value}'`)
            rawCompression = value
            break
          case 'FileHash': fileHash = NixHash.parse(value); break
          case 'FileSize': fileSize = parseSize(value, 'FileSize'); break
          case 'NarHash':
            narHash = NixHash.parse(value)
            // Nix hashes the incoming NAR with sha256, so any other NarHash can never match.
            if (narHash.algorithm !== 'sha256') throw new Error(`NarHash must be sha256, not ${narHash.algorithm}`)
            break
          case 'NarSize': narSize = parseSize(value, 'NarSize'); break
          case 'References': {
            if (references !== undefined) throw new Error('second References line')
            const refs = new Set<string>()
            for (const token of value.split(' ')) {
              if (token !== '') refs.add(parseStorePathBaseName(token, storeDir).baseName)
            }
            references = [...refs]
            break
          }
          case 'Deriver': deriver = value === 'unknown-deriver' ? undefined : parseStorePathBaseName(value, storeDir).baseName; break
          case 'Sig': {
            const problem = sigSyntaxProblem(value)
            if (problem !== undefined) throw new Error(problem)
            if (!sigs.includes(value)) sigs.push(value)
            break
          }
          case 'CA':
            if (caSeen) throw new Error('second CA line')
            caSeen = true
            if (value !== '') parseContentAddress(value)
            ca = value === '' ? undefined : value
            break
        }
      } catch (err) {
        throw new FormatError(`${where}: ${(err as Error).message}`, { position: i + 1, cause: err })
      }
    })

    if (storePath === undefined) throw new FormatError('narinfo has no StorePath line')
    if (url === undefined || url === '') throw new FormatError('narinfo has no URL line or an empty URL')
    if (narHash === undefined) throw new FormatError('narinfo has no NarHash line')
    if (narSize === undefined || narSize === 0) throw new FormatError('narinfo has no NarSize line or a NarSize of 0')

    this.storePathParsed = storePath
    this.url = url
    this.rawCompression = rawCompression
    this.fileHash = fileHash
    this.fileSize = fileSize
    this.narHash = narHash
    this.narSize = narSize
    this.references = Object.freeze(references ?? [])
    this.deriver = deriver
    this.sigs = Object.freeze(sigs)
    this.ca = ca
  }

  /** Parses a narinfo; bytes must be valid UTF-8. Throws FormatError naming the line and the reason. */
  static parse (input: string | Uint8Array, storeDir: string = STORE_DIR): NarInfo {
    let text: string
    if (typeof input === 'string') {
      text = input
    } else {
      try {
        text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(input)
      } catch {
        throw new FormatError('narinfo is not valid UTF-8')
      }
    }
    if (text === '') throw new FormatError('narinfo is empty')
    if (!text.endsWith('\n')) throw new FormatError('narinfo does not end with a line feed', { position: text.split('\n').length })
    const raw = text.slice(0, -1).split('\n')
    const lines = raw.map((line, i) => {
      const position = i + 1
      if (line.includes('\r')) throw new FormatError(`narinfo line ${position}: carriage return (CRLF line endings are not allowed)`, { position })
      if (line === '') throw new FormatError(`narinfo line ${position}: blank line`, { position })
      const colon = line.indexOf(':')
      if (colon < 0) throw new FormatError(`narinfo line ${position}: expecting ': ' in ${JSON.stringify(line)}`, { position })
      // Nix skips exactly one character after the colon, whatever it is; anything but a space would be misread.
      if (line[colon + 1] !== ' ') {
        throw new FormatError(`narinfo line ${position}: expecting ': ' after ${JSON.stringify(line.slice(0, colon))}, found ${JSON.stringify(line.slice(colon, colon + 2))}`, { position })
      }
      return { key: line.slice(0, colon), value: line.slice(colon + 2) }
    })
    return new NarInfo(lines, storeDir)
  }

  /** A new narinfo in Nix's writer order, with `Compression` always explicit and `References: ` always present. */
  static build (fields: NarInfoFields, storeDir: string = STORE_DIR): NarInfo {
    if (fields.compression === '') throw new FormatError('Compression must be given explicitly (an empty value means bzip2)')
    const lines: NarInfoLine[] = [
      { key: 'StorePath', value: fields.storePath },
      { key: 'URL', value: fields.url },
      { key: 'Compression', value: fields.compression }
    ]
    if (fields.fileHash !== undefined) lines.push({ key: 'FileHash', value: hashText(fields.fileHash, 'FileHash') })
    if (fields.fileSize !== undefined) lines.push({ key: 'FileSize', value: checkSizeValue(fields.fileSize, 'FileSize') })
    lines.push({ key: 'NarHash', value: hashText(fields.narHash, 'NarHash') })
    lines.push({ key: 'NarSize', value: checkSizeValue(fields.narSize, 'NarSize') })
    const refs = [...new Set((fields.references ?? []).map(r => parseStorePathOrBaseName(r, storeDir).baseName))].sort(bytewise)
    lines.push({ key: 'References', value: refs.join(' ') })
    if (fields.deriver !== undefined) lines.push({ key: 'Deriver', value: parseStorePathOrBaseName(fields.deriver, storeDir).baseName })
    for (const sig of [...new Set(fields.sigs ?? [])].sort(bytewise)) lines.push({ key: 'Sig', value: sig })
    if (fields.ca !== undefined && fields.ca !== '') lines.push({ key: 'CA', value: fields.ca })
    return new NarInfo(lines, storeDir)
  }

  get storePath (): string { return this.storePathParsed.path }
  get hashPart (): string { return this.storePathParsed.hashPart }
  /** What the NAR file is compressed with; an absent or empty field means bzip2, as in Nix. */
  get compression (): string { return this.rawCompression === undefined || this.rawCompression === '' ? 'bzip2' : this.rawCompression }

  /** The raw value of the last line with `key`, for fields this class does not model (e.g. `System`). */
  field (key: string): string | undefined {
    for (let i = this.lines.length - 1; i >= 0; i--) if (this.lines[i]!.key === key) return this.lines[i]!.value
    return undefined
  }

  /**
   * A copy with only the unsigned transport fields rewritten: each replaces its first line in place
   * (later duplicates are dropped), a missing one is inserted after its predecessor in Nix's writer
   * order, and FileHash/FileSize are removed when not given. All other lines stay byte for byte.
   */
  withTransport (t: NarInfoTransport): NarInfo {
    if (t.compression === '') throw new FormatError('Compression must be given explicitly (an empty value means bzip2)')
    const order = ['URL', 'Compression', 'FileHash', 'FileSize'] as const
    const wanted: Record<(typeof order)[number], string | undefined> = {
      URL: t.url,
      Compression: t.compression,
      FileHash: t.fileHash === undefined ? undefined : hashText(t.fileHash, 'FileHash'),
      FileSize: t.fileSize === undefined ? undefined : checkSizeValue(t.fileSize, 'FileSize')
    }
    const seen = new Set<string>()
    const lines: NarInfoLine[] = []
    for (const line of this.lines) {
      if (!(order as readonly string[]).includes(line.key)) { lines.push(line); continue }
      const key = line.key as (typeof order)[number]
      const value = wanted[key]
      if (value === undefined || seen.has(key)) continue
      seen.add(key)
      lines.push({ key, value })
    }
    for (let k = 1; k < order.length; k++) {
      const key = order[k]!
      const value = wanted[key]
      if (value === undefined || seen.has(key)) continue
      let at = -1
      for (let p = k - 1; p >= 0 && at < 0; p--) at = lines.findIndex(l => l.key === order[p])
      lines.splice(at + 1, 0, { key, value })
      seen.add(key)
    }
    return new NarInfo(lines, this.storeDir)
  }

  /** A copy with `extra` signatures added after the existing ones (before `CA` when there are none); duplicates are skipped. */
  withSigs (extra: readonly string[]): NarInfo {
    const have = new Set(this.lines.filter(l => l.key === 'Sig').map(l => l.value))
    const add: NarInfoLine[] = []
    for (const sig of extra) {
      if (have.has(sig)) continue
      have.add(sig)
      add.push({ key: 'Sig', value: sig })
    }
    if (add.length === 0) return this
    const lines = [...this.lines]
    let at = lines.findLastIndex(l => l.key === 'Sig')
    if (at < 0) {
      const ca = lines.findIndex(l => l.key === 'CA')
      at = (ca < 0 ? lines.length : ca) - 1
    }
    lines.splice(at + 1, 0, ...add)
    return new NarInfo(lines, this.storeDir)
  }

  /** `Key: value\n` per line: one space, LF only, no blank lines, final LF. */
  toString (): string {
    let s = ''
    for (const { key, value } of this.lines) s += `${key}: ${value}\n`
    return s
  }
}

function bytewise (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}
