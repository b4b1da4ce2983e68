/**
 * A big NAR of unique bytes made in one reused buffer, so that its source adds nothing to the
 * memory measured: a pseudo-random MiB, each 32-bit word mixed with its position. Every other MiB
 * compresses about 2×, so both ways of storing a chunk are exercised. Not a valid NAR (no
 * framing): the chunk store and the relay only hash and count it.
 */
import { createHash } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import { pseudoRandom } from '../../test/helpers/pseudo-random.ts'
import { MiB } from './measure.ts'

export interface BigNar {
  size: number
  narHash: NixHash
  /** The bytes, afresh at each call; each piece is valid until the next is asked for. */
  body: () => AsyncGenerator<Uint8Array>
}

export async function bigNar (gib: number): Promise<BigNar> {
  const size = gib * 1024 ** 3
  const base = new Uint32Array(Uint8Array.from(pseudoRandom(`big${gib}`, MiB)).buffer)
  const buf = new Uint32Array(MiB / 4)
  const bytes = new Uint8Array(buf.buffer)
  async function * body (): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < size / MiB; i++) {
      const mask = i % 2 === 0 ? 0xffffffff : 0x0f0f0f0f
      for (let j = 0; j < buf.length; j++) buf[j] = ((base[j]! ^ Math.imul(i * buf.length + j, 2654435761)) & mask) >>> 0
      yield bytes
    }
  }
  const h = createHash('sha256')
  for await (const piece of body()) h.update(piece)
  return { size, body, narHash: new NixHash('sha256', new Uint8Array(h.digest())) }
}
