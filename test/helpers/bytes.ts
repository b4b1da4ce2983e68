/**
 * Byte helpers shared by the tests: a buffer as a stream of chunks, the NarUpload of a buffer, and
 * sha256 digests of a buffer and of what a source delivers, and a stream's bytes in one buffer.
 */
import { createHash } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import type { NarSource, NarUpload } from '../../src/types.ts'

export async function * chunks (bytes: Uint8Array, size = 1 << 20): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

/** `bytes` offered for publishing under their own NarHash and size. */
export function upload (bytes: Uint8Array): NarUpload {
  return { narHash: NixHash.of('sha256', bytes), narSize: bytes.length, body: chunks(bytes) }
}

export function sha256Hex (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** The sha256 (hex) of the bytes a source delivers, as delivered. */
export async function sourceDigest (source: NarSource): Promise<string> {
  const h = createHash('sha256')
  for await (const c of source.body) h.update(c)
  return h.digest('hex')
}

/** A stream's bytes, in one buffer. */
export async function collect (source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of source) parts.push(c)
  return Buffer.concat(parts)
}
