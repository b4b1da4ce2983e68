/**
 * The NAR of a filesystem path, byte-identical to `nix-store --dump`, following Nix `dumpPath` in
 * `src/libutil/archive.cc`: a regular file is executable when its owner-execute bit (`S_IXUSR`) is
 * set, a symlink's target is stored as its raw bytes, a directory's entries are sorted bytewise
 * by their raw name bytes. Nothing else (times, owners, other mode bits) is recorded, and Nix has
 * no representation for sockets, FIFOs or devices, so they are refused.
 *
 * Paths and names are handled as Buffers end to end so that names that are not valid UTF-8 survive.
 * File contents are streamed in 1 MiB reads and exactly `st_size` bytes are taken, as Nix does; a
 * file that shrinks while being read is an error rather than a silently short NAR. The tree is
 * walked depth-first, one directory listing held per open level.
 */
import { lstat, open, readdir, readlink } from 'node:fs/promises'
import type { NarWriteEvent } from './writer.ts'
import { writeNar } from './writer.ts'
import { Utf8, compareBytes } from './wire.ts'

export interface DumpOptions {
  signal?: AbortSignal
}

const S_IXUSR = 0o100
const READ_SIZE = 1 << 20
const SLASH = Buffer.from('/')

function describe (mode: number): string {
  switch (mode & 0o170000) {
    case 0o140000: return 'a socket'
    case 0o010000: return 'a FIFO'
    case 0o020000: return 'a character device'
    case 0o060000: return 'a block device'
    default: return `of unknown type (mode ${mode.toString(8)})`
  }
}

async function * readContents (path: Buffer, size: number, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
  const fh = await open(path, 'r')
  try {
    let done = 0
    while (done < size) {
      signal?.throwIfAborted()
      // A fresh buffer per read: the consumer may hold on to what it was given.
      const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, size - done))
      const { bytesRead } = await fh.read(buf, 0, buf.length, done)
      if (bytesRead === 0) throw new Error(`file '${Utf8.decode(path)}' shrank while being dumped (${done} of ${size} bytes)`)
      done += bytesRead
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead)
    }
  } finally {
    await fh.close()
  }
}

/** Writer events for the tree at `root`, depth-first, entries in NAR order. */
export async function * dumpEvents (root: string | Buffer, opts: DumpOptions = {}): AsyncGenerator<NarWriteEvent> {
  const signal = opts.signal
  async function * visit (path: Buffer, name: Buffer, depth: number): AsyncGenerator<NarWriteEvent> {
    signal?.throwIfAborted()
    const st = await lstat(path, { bigint: false })
    if (st.isFile()) {
      yield { type: 'file', depth, name, executable: (st.mode & S_IXUSR) !== 0, size: st.size, contents: readContents(path, st.size, signal) }
    } else if (st.isSymbolicLink()) {
      const target = await readlink(path, { encoding: 'buffer' })
      yield { type: 'symlink', depth, name, target: Utf8.decode(target), targetBytes: target }
    } else if (st.isDirectory()) {
      yield { type: 'directory', depth, name }
      const names = await readdir(path, { encoding: 'buffer' })
      names.sort(compareBytes)
      for (const n of names) yield * visit(Buffer.concat([path, SLASH, n]), n, depth + 1)
    } else {
      throw new Error(`cannot dump '${Utf8.decode(path)}': it is ${describe(st.mode)}, and a NAR holds only regular files, directories and symlinks`)
    }
  }
  const start = typeof root === 'string' ? Buffer.from(root) : root
  yield * visit(start, Buffer.alloc(0), 0)
}

/** The NAR serialisation of `path`, as `nix-store --dump path` prints it. */
export function dumpPath (path: string | Buffer, opts: DumpOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  return writeNar(dumpEvents(path, opts), opts)
}
