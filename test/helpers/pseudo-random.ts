/**
 * Deterministic pseudo-random bytes (AES-128-CTR over zeros with a seed-derived key), generated
 * fast, so tests can pin values that depend on the bytes (chunk boundaries) and stream gigabytes
 * without holding them.
 */
import { createCipheriv, createHash } from 'node:crypto'

export function pseudoRandom (seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size))
}

/**
 * `size` bytes that repeat a `period`-byte pseudo-random block: a stream as long as wanted whose
 * chunks are mostly the same few, so it costs CPU but little disk.
 */
export async function * repeatingStream (seed: string, size: number, period = 3_000_017, piece = 1 << 20): AsyncGenerator<Uint8Array> {
  const block = pseudoRandom(seed, period)
  let at = 0
  for (let done = 0; done < size;) {
    const n = Math.min(piece, size - done, period - at)
    yield block.subarray(at, at + n)
    done += n
    at = (at + n) % period
  }
}
