/**
 * Deterministic pseudo-random bytes (AES-128-CTR over zeros with a seed-derived key), generated
 * fast and on the fly, so tests can stream gigabytes without holding them and pin values that
 * depend on the bytes (chunk boundaries).
 */
import { createCipheriv, createHash } from 'node:crypto'

export function pseudoRandom (seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size))
}

/** `size` pseudo-random bytes as a stream of `piece`-byte pieces (the last one shorter). */
export async function * pseudoRandomStream (seed: string, size: number, piece = 1 << 20): AsyncGenerator<Uint8Array> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(piece)
  for (let done = 0; done < size; done += piece) yield cipher.update(zeros.subarray(0, Math.min(piece, size - done)))
}
