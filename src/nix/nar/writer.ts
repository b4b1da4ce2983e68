/**
 * Serializes a file tree to NAR bytes, the inverse of `reader.ts`; the byte layout is Nix's
 * `dumpPath` in `src/libutil/archive.cc`. The input is either the reader's event stream (each node
 * with its `depth`, entries in NAR order) or a nested `NarTree`. Events are checked as Nix's parser
 * would check the result — names valid and strictly increasing bytewise within each directory,
 * depths consistent, one root, file sizes matching their contents — so the writer never emits a NAR
 * that Nix would refuse. A tree's entries are sorted here, since object keys carry no byte order.
 *
 * Small tokens and small files are coalesced into ~64 KiB chunks; large file contents pass through
 * as the chunks they arrive in.
 */
import { FormatError } from '../../errors.ts'
import { Utf8, checkName, compareBytes, utf8 } from './wire.ts'

type Bytes = Uint8Array
type Name = string | Bytes

export type NarWriteEvent =
  | { type: 'directory', depth: number, name: Name }
  | { type: 'symlink', depth: number, name: Name, target: string, targetBytes?: Bytes }
  | { type: 'file', depth: number, name: Name, executable?: boolean, size?: number,
      contents: Bytes | Iterable<Bytes> | AsyncIterable<Bytes> }

export type NarTree =
  | { type: 'directory', entries: Record<string, NarTree> | Map<Name, NarTree> }
  | { type: 'symlink', target: string | Bytes }
  | { type: 'file', executable?: boolean, contents: string | Bytes }

export interface NarWriteOptions {
  signal?: AbortSignal
  /** Longest entry name accepted, in bytes (default 255, as the reader). */
  maxNameLength?: number
}

const FLUSH_AT = 64 * 1024
const COPY_BELOW = 16 * 1024

const tokens = new Map<string, Bytes>()
/** The encoded `str(tag)` for a fixed tag, built once. */
function token (s: string): Bytes {
  let t = tokens.get(s)
  if (t === undefined) { t = encodeStr(utf8(s)); tokens.set(s, t) }
  return t
}

function encodeStr (b: Bytes): Bytes {
  const out = new Uint8Array(8 + b.length + (8 - b.length % 8) % 8)
  writeU64(out, 0, b.length)
  out.set(b, 8)
  return out
}

function writeU64 (out: Bytes, at: number, n: number): void {
  let lo = n >>> 0
  let hi = Math.floor(n / 2 ** 32)
  for (let i = 0; i < 4; i++) { out[at + i] = lo & 0xff; lo >>>= 8 }
  for (let i = 4; i < 8; i++) { out[at + i] = hi & 0xff; hi >>>= 8 }
}

function asBytes (x: Name): Bytes {
  return typeof x === 'string' ? utf8(x) : x
}

/** Turns a nested tree into writer events, entries sorted bytewise. */
export function * narTreeEvents (tree: NarTree, depth = 0, name: Name = ''): Generator<NarWriteEvent> {
  if (tree.type === 'file') {
    yield { type: 'file', depth, name, executable: tree.executable ?? false, contents: asBytes(tree.contents) }
  } else if (tree.type === 'symlink') {
    const targetBytes = asBytes(tree.target)
    yield { type: 'symlink', depth, name, target: Utf8.decode(targetBytes), targetBytes }
  } else {
    yield { type: 'directory', depth, name }
    const entries = tree.entries instanceof Map ? [...tree.entries] : Object.entries(tree.entries)
    const sorted = entries.map(([n, t]) => [asBytes(n), t] as const).sort((a, b) => compareBytes(a[0], b[0]))
    for (const [n, t] of sorted) yield * narTreeEvents(t, depth + 1, n)
  }
}

function isTree (x: unknown): x is NarTree {
  return typeof x === 'object' && x !== null && 'type' in x && !(Symbol.iterator in x) && !(Symbol.asyncIterator in x)
}

/** NAR bytes for a tree or an event stream; throws FormatError on input that is not a valid tree. */
export async function * writeNar (
  input: NarTree | Iterable<NarWriteEvent> | AsyncIterable<NarWriteEvent>,
  opts: NarWriteOptions = {}
): AsyncGenerator<Uint8Array, void, undefined> {
  const events = isTree(input) ? narTreeEvents(input) : input
  const maxName = opts.maxNameLength ?? 255
  let buf = new Uint8Array(FLUSH_AT + COPY_BELOW + 64)
  let pos = 0
  const put = (b: Bytes): void => {
    if (pos + b.length > buf.length) {
      const bigger = new Uint8Array(Math.max(buf.length * 2, pos + b.length))
      bigger.set(buf.subarray(0, pos))
      buf = bigger
    }
    buf.set(b, pos)
    pos += b.length
  }
  const putStr = (b: Bytes): void => {
    const len = new Uint8Array(8)
    writeU64(len, 0, b.length)
    put(len)
    put(b)
    const pad = (8 - b.length % 8) % 8
    if (pad > 0) put(new Uint8Array(pad))
  }
  const take = (): Bytes => {
    const out = buf.slice(0, pos)
    pos = 0
    return out
  }

  // Open directories, innermost last, with the last entry name written in each.
  const dirs: Array<{ path: string, prev: Bytes | undefined }> = []
  let rootSeen = false
  let rootDone = false
  put(token('nix-archive-1'))

  for await (const ev of events) {
    opts.signal?.throwIfAborted()
    if (rootDone || (rootSeen && ev.depth === 0)) throw new FormatError('NAR writer: events after the root node is complete')
    rootSeen = true
    const name = asBytes(ev.name)
    const label = Utf8.decode(name)
    if (ev.depth > dirs.length) throw new FormatError(`NAR writer: '${label}' at depth ${ev.depth} has no open parent directory`)
    while (dirs.length > ev.depth) {
      dirs.pop()
      put(token(')')) // closes the directory node
      if (dirs.length > 0) put(token(')')) // and the entry holding it
    }
    const parent = dirs[dirs.length - 1]
    let path = ''
    if (parent === undefined) {
      if (name.length !== 0) throw new FormatError(`NAR writer: the root node must have an empty name, got '${label}'`)
    } else {
      const problem = checkName(name, maxName)
      if (problem !== undefined) throw new FormatError(`NAR writer: ${problem}: '${label}' in '${parent.path}'`)
      if (parent.prev !== undefined && compareBytes(parent.prev, name) >= 0) {
        throw new FormatError(`NAR writer: entry '${label}' is not sorted bytewise after '${Utf8.decode(parent.prev)}' in '${parent.path}'`)
      }
      parent.prev = name
      path = parent.path === '' ? label : `${parent.path}/${label}`
      put(token('entry')); put(token('(')); put(token('name')); putStr(name); put(token('node'))
    }
    put(token('(')); put(token('type'))

    if (ev.type === 'directory') {
      put(token('directory'))
      dirs.push({ path, prev: undefined })
    } else if (ev.type === 'symlink') {
      const target = ev.targetBytes ?? utf8(ev.target)
      if (target.length === 0 || target.length > 4095 || target.includes(0)) {
        throw new FormatError(`NAR writer: symlink '${path}' needs a target of 1 to 4095 bytes without NUL`)
      }
      put(token('symlink')); put(token('target')); putStr(target); put(token(')'))
    } else {
      put(token('regular'))
      if (ev.executable === true) { put(token('executable')); put(new Uint8Array(8)) }
      put(token('contents'))
      const whole = ev.contents instanceof Uint8Array ? ev.contents : undefined
      const size = ev.size ?? whole?.length
      if (size === undefined) throw new FormatError(`NAR writer: file '${path}' streams its contents but gives no size`)
      const len = new Uint8Array(8)
      writeU64(len, 0, size)
      put(len)
      let written = 0
      if (whole !== undefined) {
        written = whole.length
        if (written < COPY_BELOW) {
          put(whole)
        } else if (written === size) {
          if (pos > 0) yield take()
          yield whole
        }
      } else for await (const chunk of ev.contents as AsyncIterable<Bytes>) {
        opts.signal?.throwIfAborted()
        written += chunk.length
        if (written > size) throw new FormatError(`NAR writer: file '${path}' has more than its ${size} bytes`)
        if (chunk.length < COPY_BELOW) {
          put(chunk)
        } else {
          if (pos > 0) yield take()
          yield chunk
        }
        if (pos >= FLUSH_AT) yield take()
      }
      if (written !== size) throw new FormatError(`NAR writer: file '${path}' has ${written} bytes, not its ${size}`)
      const pad = (8 - size % 8) % 8
      if (pad > 0) put(new Uint8Array(pad))
      put(token(')'))
    }
    if (ev.type !== 'directory') {
      if (dirs.length > 0) put(token(')'))
      else rootDone = true
    }
    if (pos >= FLUSH_AT) yield take()
  }

  if (!rootSeen) throw new FormatError('NAR writer: no root node')
  while (dirs.length > 0) {
    dirs.pop()
    put(token(')'))
    if (dirs.length > 0) put(token(')'))
  }
  if (pos > 0) yield take()
}
