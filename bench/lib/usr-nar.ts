/**
 * A realistic input for the codec benches: a NAR of parts of /usr (Python, Perl, GCC's files,
 * headers, /usr/share) made by our own `dumpPath`, cut to the requested size, and a way to feed
 * it to a codec in 64 KiB chunks as a source would.
 */
import { existsSync } from 'node:fs'
import { dumpPath } from '../../src/nix/nar/dump.ts'

export async function usrNar (size: number): Promise<Buffer> {
  const parts: Uint8Array[] = []
  let total = 0
  for (const dir of ['/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/gcc', '/usr/include', '/usr/share']) {
    if (!existsSync(dir)) continue
    for await (const chunk of dumpPath(dir)) {
      parts.push(chunk)
      total += chunk.length
      if (total >= size) return Buffer.concat(parts).subarray(0, size)
    }
  }
  return Buffer.concat(parts)
}

export async function * chunks (b: Uint8Array, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}
