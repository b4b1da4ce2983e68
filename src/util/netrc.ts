/**
 * A netrc file, as Nix reads its `netrc-file` (through curl) for the credentials of private
 * caches: `machine HOST login USER password SECRET` entries, a `default` entry for every other
 * host, `account` ignored, `macdef` bodies skipped (to the next empty line), tokens separated by
 * any whitespace and double-quoted when they hold some (curl ≥ 7.84). A machine matches a URL's
 * host name, whatever its port.
 */
import { FormatError } from '../errors.ts'

export interface NetrcEntry {
  /** The host name, or undefined for the `default` entry. */
  machine?: string
  login?: string
  password?: string
}

/** The entries of a netrc file's text, in order. */
export function parseNetrc (text: string): NetrcEntry[] {
  const entries: NetrcEntry[] = []
  let current: NetrcEntry | undefined
  const tokens = tokenize(text)
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!
    const value = (): string => {
      const v = tokens[++i]
      if (v === undefined) throw new FormatError(`netrc: '${token}' at the end of the file has no value`)
      return v
    }
    switch (token) {
      case 'machine': current = { machine: value().toLowerCase() }; entries.push(current); break
      case 'default': current = {}; entries.push(current); break
      case 'login': { const v = value(); if (current !== undefined) current.login = v; break }
      case 'password': { const v = value(); if (current !== undefined) current.password = v; break }
      case 'account': value(); break
      case 'macdef': value(); break
      default: throw new FormatError(`netrc: unexpected '${token}'`)
    }
  }
  return entries
}

/** The login and password for `host`: its machine entry, else the default one. */
export function netrcCredentials (entries: readonly NetrcEntry[], host: string): { login: string, password: string } | undefined {
  const name = host.toLowerCase()
  const entry = entries.find(e => e.machine === name) ?? entries.find(e => e.machine === undefined)
  if (entry === undefined || (entry.login === undefined && entry.password === undefined)) return undefined
  return { login: entry.login ?? '', password: entry.password ?? '' }
}

/** Whitespace-separated tokens, quotes honoured; the body of a `macdef` (to the next empty line) left out. */
function tokenize (text: string): string[] {
  const tokens: string[] = []
  let i = 0
  while (i < text.length) {
    if (/\s/.test(text[i]!)) { i++; continue }
    if (text[i] === '#' && (i === 0 || text[i - 1] === '\n')) {
      // A comment line, as curl reads one.
      while (i < text.length && text[i] !== '\n') i++
      continue
    }
    let token = ''
    if (text[i] === '"') {
      i++
      while (i < text.length && text[i] !== '"') {
        if (text[i] === '\\' && i + 1 < text.length) i++
        token += text[i++]
      }
      i++
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) token += text[i++]
    }
    tokens.push(token)
    if (tokens.at(-2) === 'macdef') {
      const end = text.indexOf('\n\n', i)
      i = end === -1 ? text.length : end + 2
    }
  }
  return tokens
}
