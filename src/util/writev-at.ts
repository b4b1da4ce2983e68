/**
 * Writing several buffers at a position of a file in one `pwritev` on libuv's thread pool, going
 * on after a short write (rare on a regular file, but allowed) until every byte is written.
 */
import { writev } from 'node:fs'

/** Writes `pieces` one after another at `position`; resolves with the bytes written (all of them). */
export async function writevAt (fd: number, pieces: readonly Uint8Array[], position: number): Promise<number> {
  let rest = [...pieces]
  let total = 0
  while (rest.length > 0) {
    const n = await new Promise<number>((resolve, reject) => writev(fd, rest, position + total, (err, written) => err === null ? resolve(written) : reject(err)))
    if (n === 0) throw new Error('wrote nothing')
    total += n
    let skip = n
    while (rest.length > 0 && skip >= rest[0]!.length) skip -= rest.shift()!.length
    if (skip > 0) rest[0] = rest[0]!.subarray(skip)
  }
  return total
}
