/**
 * The NAR integrity gate. Every byte that narswarm serves or stores passes through `verifyNar`,
 * which hashes and counts as the bytes flow and withholds the final chunk until the whole stream
 * has been seen: only when the SHA-256 and the length equal the signed NarHash and NarSize is that
 * last chunk released. A consumer (Nix, a cache) therefore never receives a complete body that is
 * wrong — on a mismatch the stream throws `IntegrityError` instead of ending, so an HTTP response
 * is cut short and Nix retries. Memory use is one chunk, whatever the NAR size.
 */
import { createHash } from 'node:crypto'
import { IntegrityError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'

export interface NarExpectation {
  narHash: NixHash
  narSize: number
}

export async function * verifyNar (source: AsyncIterable<Uint8Array>, expected: NarExpectation, what = 'NAR'): AsyncGenerator<Uint8Array> {
  const hash = createHash(expected.narHash.algorithm)
  let size = 0
  let held: Uint8Array | undefined
  for await (const chunk of source) {
    if (chunk.length === 0) continue
    size += chunk.length
    if (size > expected.narSize) {
      throw new IntegrityError(`${what}: more than the expected NarSize of ${expected.narSize} bytes`)
    }
    hash.update(chunk)
    if (held !== undefined) yield held
    held = chunk
  }
  if (size !== expected.narSize) {
    throw new IntegrityError(`${what}: size mismatch, expected NarSize ${expected.narSize}, got ${size} bytes`)
  }
  const got = new NixHash(expected.narHash.algorithm, hash.digest())
  if (!got.equals(expected.narHash)) {
    throw new IntegrityError(`${what}: hash mismatch, expected ${expected.narHash.toString()}, got ${got.toString()}`)
  }
  if (held !== undefined) yield held
}

/**
 * The bytes [start, end) of a verified stream, for `Range` requests. The final piece of the slice
 * is released only after the whole source has been drained, so a range that stops short of the end
 * still never delivers bytes that later fail verification.
 */
export async function * sliceBytes (source: AsyncIterable<Uint8Array>, start: number, end: number): AsyncGenerator<Uint8Array> {
  let offset = 0
  let held: Uint8Array | undefined
  for await (const chunk of source) {
    const from = Math.max(start - offset, 0)
    const to = Math.min(end - offset, chunk.length)
    offset += chunk.length
    if (from >= to) continue
    if (held !== undefined) yield held
    held = chunk.subarray(from, to)
  }
  if (held !== undefined) yield held
}
