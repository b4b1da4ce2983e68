/**
 * A streaming, validating NAR parser, following Nix `src/libutil/archive.cc` (`parseDump`) as
 * tightened in Nix ≥ 2.35 and Lix. The grammar (`str(s)` = u64le length, bytes, zero padding to 8):
 *
 *   nar   = str("nix-archive-1") node
 *   node  = str("(") str("type") typed str(")")
 *   typed = str("regular") [str("executable") str("")] str("contents") str(<bytes>)
 *         | str("symlink") str("target") str(<target>)
 *         | str("directory") { str("entry") str("(") str("name") str(<name>) str("node") node str(")") }*
 *
 * Everything is checked, in this order of bytes, and the first violation throws a FormatError
 * carrying its byte offset: the magic, the exact tag order, zero padding, entry names (not empty,
 * `.`, `..`, no `/` or NUL, at most `maxNameLength` bytes) in strictly increasing bytewise order
 * (which also rules out duplicates), symlink targets (1..`maxTargetLength` bytes, no NUL), nesting
 * below `maxDepth`, truncation and trailing bytes. The defaults are Nix 2.35's limits: names ≤ 255
 * bytes, targets ≤ 4095 bytes, depth < 64 (the root is depth 0). Nix 2.8 checks none of the limits,
 * so a NAR it accepts may be refused here; raise the limits to read such an archive.
 *
 * File contents are not buffered: a `file` event carries an iterable over the source's own chunks
 * (zero-copy views), which must be read before asking for the next event or is skipped over.
 */
import { FormatError } from '../../errors.ts'
import { Utf8, NAR_MAGIC, checkName, compareBytes, utf8 } from './wire.ts'

export interface NarNodeBase {
  /** `/`-joined names from the root, `''` for the root itself (names decoded as UTF-8). */
  path: string
  /** The entry's name as stored in the NAR; empty for the root. */
  name: Uint8Array
  /** 0 for the root, 1 for its entries, and so on. */
  depth: number
}
export interface NarDirectory extends NarNodeBase { type: 'directory' }
export interface NarSymlink extends NarNodeBase {
  type: 'symlink'
  /** The target decoded as UTF-8; `targetBytes` holds the exact bytes. */
  target: string
  targetBytes: Uint8Array
}
export interface NarFile extends NarNodeBase {
  type: 'file'
  executable: boolean
  size: number
  /** Byte offset of the first content byte in the NAR (the `.ls` listing's `narOffset`). */
  offset: number
  /** The file's bytes, readable once, before the next event is requested. */
  contents: AsyncIterable<Uint8Array>
}
export type NarEvent = NarDirectory | NarSymlink | NarFile

export interface NarReadOptions {
  signal?: AbortSignal
  /** Longest entry name in bytes (default 255). */
  maxNameLength?: number
  /** Longest symlink target in bytes (default 4095). */
  maxTargetLength?: number
  /** Nodes may nest at depths 0 … maxDepth − 1 (default 64). */
  maxDepth?: number
}

const MAX_TAG = 32
const EMPTY = new Uint8Array(0)

const encodedTags = new Map<string, Uint8Array>()
/** `str(tag)` as it appears on the wire. */
function encodedTag (tag: string): Uint8Array {
  let e = encodedTags.get(tag)
  if (e === undefined) {
    const b = utf8(tag)
    e = new Uint8Array(8 + b.length + (8 - b.length % 8) % 8)
    e[0] = b.length
    e.set(b, 8)
    encodedTags.set(tag, e)
  }
  return e
}

/** Pull-based byte reader over an async iterable, tracking the absolute offset. */
class Input {
  offset = 0
  private chunk: Uint8Array = EMPTY
  private pos = 0
  private done = false
  private readonly it: AsyncIterator<Uint8Array>
  private readonly signal: AbortSignal | undefined

  constructor (source: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined) {
    this.it = source[Symbol.asyncIterator]()
    this.signal = signal
  }

  /** Makes at least one unread byte available; false at the end of the source. */
  private async fill (): Promise<boolean> {
    while (this.pos >= this.chunk.length) {
      if (this.done) return false
      this.signal?.throwIfAborted()
      const r = await this.it.next()
      this.signal?.throwIfAborted()
      if (r.done === true) { this.done = true; return false }
      this.chunk = r.value
      this.pos = 0
    }
    return true
  }

  private truncated (): FormatError {
    return new FormatError(`NAR truncated at offset ${this.offset}`, { position: this.offset })
  }

  /** Up to `max` bytes (at least one) as a view into the source chunk. */
  async readSome (max: number): Promise<Uint8Array> {
    if (!await this.fill()) throw this.truncated()
    const n = Math.min(max, this.chunk.length - this.pos)
    const out = this.chunk.subarray(this.pos, this.pos + n)
    this.pos += n
    this.offset += n
    return out
  }

  /** Exactly `n` bytes; copied only when they span source chunks. */
  async readExact (n: number): Promise<Uint8Array> {
    if (n === 0) return EMPTY
    const first = await this.readSome(n)
    if (first.length === n) return first
    const out = new Uint8Array(n)
    out.set(first)
    let have = first.length
    while (have < n) {
      const part = await this.readSome(n - have)
      out.set(part, have)
      have += part.length
    }
    return out
  }

  /** The next `n` bytes if the current chunk holds them, without consuming them. */
  peek (n: number): Uint8Array | undefined {
    return this.chunk.length - this.pos >= n ? this.chunk.subarray(this.pos, this.pos + n) : undefined
  }

  skip (n: number): void {
    this.pos += n
    this.offset += n
  }

  async atEnd (): Promise<boolean> {
    return !await this.fill()
  }

  async close (): Promise<void> {
    if (!this.done) { this.done = true; await this.it.return?.() }
  }
}

function fail (message: string, position: number): FormatError {
  return new FormatError(`${message} at offset ${position}`, { position })
}

function show (bytes: Uint8Array): string {
  return JSON.stringify(Utf8.decode(bytes.subarray(0, 64)))
}

/** Parses a NAR into events; see the module comment for what is checked. */
export async function * parseNar (source: AsyncIterable<Uint8Array>, opts: NarReadOptions = {}): AsyncGenerator<NarEvent, void, undefined> {
  const maxName = opts.maxNameLength ?? 255
  const maxTarget = opts.maxTargetLength ?? 4095
  const maxDepth = opts.maxDepth ?? 64
  const input = new Input(source, opts.signal)

  /** Reads a u64 length, refusing anything above `max`. */
  const readLength = async (max: number, what: string): Promise<number> => {
    const at = input.offset
    const b = await input.readExact(8)
    const lo = (b[0]! | b[1]! << 8 | b[2]! << 16 | b[3]! << 24) >>> 0
    const hi = (b[4]! | b[5]! << 8 | b[6]! << 16 | b[7]! << 24) >>> 0
    const n = hi * 2 ** 32 + lo
    if (hi >= 2 ** 21 || n > max) throw fail(`${what} length ${hi >= 2 ** 21 ? '≥ 2^53' : n} exceeds ${max}`, at)
    return n
  }
  const readPadding = async (len: number): Promise<void> => {
    const pad = (8 - len % 8) % 8
    if (pad === 0) return
    const at = input.offset
    const b = await input.readExact(pad)
    for (let i = 0; i < pad; i++) if (b[i] !== 0) throw fail('non-zero padding', at + i)
  }
  const readBytes = (max: number, what: string): Uint8Array | Promise<Uint8Array> => {
    const head = input.peek(8)
    if (head !== undefined) {
      const len = head[0]! | head[1]! << 8
      if (len <= max && head.subarray(2).every(b => b === 0)) {
        const padded = 8 + len + (8 - len % 8) % 8
        const all = input.peek(padded)
        if (all !== undefined && all.subarray(8 + len).every(b => b === 0)) {
          input.skip(padded)
          // A copy: names and targets outlive the event, and must not pin the source's chunk.
          return all.slice(8, 8 + len)
        }
      }
    }
    return readBytesSlowly(max, what)
  }
  const readBytesSlowly = async (max: number, what: string): Promise<Uint8Array> => {
    const len = await readLength(max, what)
    const bytes = (await input.readExact(len)).slice()
    await readPadding(len)
    return bytes
  }
  /**
   * Reads one tag and returns which of `allowed` it is. Most tags lie whole inside one source chunk:
   * those are matched synchronously against their encoded form, which is most of the parsing time.
   */
  const readTag = <T extends string>(...allowed: T[]): T | Promise<T> => {
    for (const t of allowed) {
      const want = encodedTag(t)
      const have = input.peek(want.length)
      if (have !== undefined && compareBytes(have, want) === 0) { input.skip(want.length); return t }
    }
    return readTagSlowly(allowed)
  }
  const readTagSlowly = async <T extends string>(allowed: T[]): Promise<T> => {
    const at = input.offset
    const expected = allowed.map(t => `'${t}'`).join(' or ')
    const len = await readLength(Number.MAX_SAFE_INTEGER, 'tag')
    if (len > MAX_TAG) throw fail(`expected ${expected}, got a string of ${len} bytes`, at)
    const bytes = await input.readExact(len)
    await readPadding(len)
    const tag = Utf8.decode(bytes)
    for (const t of allowed) if (t === tag) return t
    throw fail(`expected ${expected}, got ${show(bytes)}`, at)
  }

  try {
    const magic = await input.readExact(8 + NAR_MAGIC.length)
    if (magic[0] !== NAR_MAGIC.length || magic.subarray(1, 8).some(b => b !== 0) || compareBytes(magic.subarray(8), NAR_MAGIC) !== 0) {
      throw fail('not a NAR: bad magic (expected "nix-archive-1")', 0)
    }
    await readPadding(NAR_MAGIC.length)

    // Open directories, innermost last, each with the last entry name seen in it.
    const dirs: Array<{ path: string, prev: Uint8Array | undefined }> = []
    let node: NarNodeBase = { path: '', name: EMPTY, depth: 0 }

    for (;;) {
      await readTag('(')
      await readTag('type')
      const typeAt = input.offset
      const type = await readTag('regular', 'symlink', 'directory')
      if (node.depth >= maxDepth) throw fail(`NAR nested deeper than ${maxDepth} levels`, typeAt)

      if (type === 'directory') {
        yield { type: 'directory', ...node }
        dirs.push({ path: node.path, prev: undefined })
      } else if (type === 'symlink') {
        await readTag('target')
        const at = input.offset
        const target = await readBytes(maxTarget, 'symlink target')
        if (target.length === 0) throw fail('empty symlink target', at)
        if (target.includes(0)) throw fail('symlink target contains NUL', at)
        yield { type: 'symlink', ...node, target: Utf8.decode(target), targetBytes: target }
        await readTag(')')
      } else {
        let executable = false
        if (await readTag('executable', 'contents') === 'executable') {
          const at = input.offset
          if (await readLength(Number.MAX_SAFE_INTEGER, 'executable marker') !== 0) {
            throw fail('executable marker has a non-empty value', at)
          }
          executable = true
          await readTag('contents')
        }
        const size = await readLength(Number.MAX_SAFE_INTEGER, 'file')
        const offset = input.offset
        const path = node.path
        let remaining = size
        let current = true
        let taken = false
        const contents: AsyncIterable<Uint8Array> = {
          [Symbol.asyncIterator]: async function * () {
            if (taken) throw new Error(`contents of '${path}' can be read only once`)
            taken = true
            while (remaining > 0 || !current) {
              if (!current) throw new Error(`contents of '${path}' read after the next NAR event was requested`)
              const chunk = await input.readSome(Math.min(remaining, 1 << 20))
              remaining -= chunk.length
              yield chunk
            }
          }
        }
        yield { type: 'file', ...node, executable, size, offset, contents }
        current = false
        while (remaining > 0) remaining -= (await input.readSome(remaining)).length
        await readPadding(size)
        await readTag(')')
      }

      // A finished file or symlink closes the entry holding it; then climb out of finished
      // directories until the next entry or the end of the root.
      if (type !== 'directory' && dirs.length > 0) await readTag(')')
      let next: NarNodeBase | undefined
      while (dirs.length > 0 && next === undefined) {
        const dir = dirs[dirs.length - 1]!
        const tag = await readTag('entry', ')')
        if (tag === ')') {
          dirs.pop()
          if (dirs.length > 0) await readTag(')')
          continue
        }
        await readTag('(')
        await readTag('name')
        const at = input.offset
        const name = await readBytes(maxName, 'entry name')
        const problem = checkName(name, maxName)
        if (problem !== undefined) throw fail(`${problem}: ${show(name)}`, at)
        if (dir.prev !== undefined) {
          const c = compareBytes(dir.prev, name)
          if (c === 0) throw fail(`duplicate entry ${show(name)} in directory '${dir.path}'`, at)
          if (c > 0) throw fail(`entry ${show(name)} is not sorted after ${show(dir.prev)} in directory '${dir.path}'`, at)
        }
        dir.prev = name
        await readTag('node')
        const text = Utf8.decode(name)
        next = { path: dir.path === '' ? text : `${dir.path}/${text}`, name, depth: dirs.length }
      }
      if (next === undefined) break
      node = next
    }

    if (!await input.atEnd()) throw fail('trailing bytes after the NAR', input.offset)
  } finally {
    await input.close()
  }
}

/**
 * Passes `source` through unchanged while parsing it, so a consumer (a hasher, a cache writer)
 * sees only bytes the parser has already accepted; throws at the first violation.
 */
export async function * validateNar (source: AsyncIterable<Uint8Array>, opts: NarReadOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const seen: Uint8Array[] = []
  const tap = async function * (): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) { seen.push(chunk); yield chunk }
  }
  for await (const event of parseNar(tap(), opts)) {
    if (event.type === 'file') {
      for await (const _ of event.contents) {
        // Each content chunk is a view into the newest source chunk: release what came before it.
        while (seen.length > 1) yield seen.shift()!
      }
    }
    while (seen.length > 1) yield seen.shift()!
  }
  while (seen.length > 0) yield seen.shift()!
}
