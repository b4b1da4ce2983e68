/**
 * A ChunkStore in memory with fixed-size chunks, for unit tests of the modules that build on the
 * store's interface (peer listener, peer client); the real store is tested on its own and end to end.
 */
import { createHash } from 'node:crypto'
import { IntegrityError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import type { ChunkId, ChunkStore, CommittedNar, Manifest, NarIdentity } from '../../src/chunk/types.ts'

const hex = (id: Uint8Array): string => Buffer.from(id).toString('hex')
const sha = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest())

export class MemoryChunkStore implements ChunkStore {
  readonly cdcId: string
  readonly chunks = new Map<string, Uint8Array>()
  readonly manifests = new Map<string, Manifest>()
  readonly #listeners = new Set<(nar: CommittedNar) => void>()
  readonly #chunkSize: number

  constructor (chunkSize = 16_384, cdcId = 'fixed-test-16384') {
    this.#chunkSize = chunkSize
    this.cdcId = cdcId
  }

  manifest (narHash: NixHash): Manifest | undefined { return this.manifests.get(narHash.toNix32()) }
  has (ids: readonly ChunkId[]): boolean[] { return ids.map(id => this.chunks.has(hex(id))) }
  async readChunk (id: ChunkId): Promise<Uint8Array | undefined> { return this.chunks.get(hex(id)) }

  render (narHash: NixHash): AsyncIterable<Uint8Array> | undefined {
    const m = this.manifest(narHash)
    if (m === undefined) return undefined
    const chunks = this.chunks
    return (async function * () {
      for (const c of m.chunks) {
        const bytes = chunks.get(hex(c.id))
        if (bytes === undefined) throw new IntegrityError('chunk gone')
        yield bytes
      }
    })()
  }

  /** Splits bytes into this store's chunks (a manifest of them, not stored). */
  split (nar: Uint8Array): { manifest: Manifest, parts: Uint8Array[] } {
    const parts: Uint8Array[] = []
    for (let o = 0; o < nar.length; o += this.#chunkSize) parts.push(nar.subarray(o, Math.min(o + this.#chunkSize, nar.length)))
    return {
      parts,
      manifest: { cdcId: this.cdcId, narHash: NixHash.of('sha256', nar), narSize: nar.length, chunks: parts.map(p => ({ id: sha(p), size: p.length })) }
    }
  }

  async ingest (expected: NarIdentity, body: AsyncIterable<Uint8Array>): Promise<Manifest> {
    const parts: Uint8Array[] = []
    for await (const b of body) parts.push(b)
    const nar = Buffer.concat(parts)
    if (nar.length !== expected.narSize || !NixHash.of('sha256', nar).equals(expected.narHash)) throw new IntegrityError('NAR does not match')
    const { manifest, parts: chunks } = this.split(nar)
    for (const [i, c] of chunks.entries()) this.chunks.set(hex(manifest.chunks[i]!.id), Uint8Array.from(c))
    this.#commit(manifest, expected.storePath)
    return manifest
  }

  async putChunk (id: ChunkId, bytes: Uint8Array): Promise<void> {
    if (hex(sha(bytes)) !== hex(id)) throw new IntegrityError(`chunk ${hex(id)} does not match its id`)
    this.chunks.set(hex(id), Uint8Array.from(bytes))
  }

  async commitManifest (manifest: Manifest, expected: NarIdentity): Promise<void> {
    const hash = createHash('sha256')
    let size = 0
    for (const c of manifest.chunks) {
      const bytes = this.chunks.get(hex(c.id))
      if (bytes === undefined) throw new IntegrityError('chunk missing')
      hash.update(bytes)
      size += bytes.length
    }
    if (size !== expected.narSize || !new NixHash('sha256', new Uint8Array(hash.digest())).equals(expected.narHash)) {
      throw new IntegrityError('manifest does not render the expected NAR')
    }
    this.#commit(manifest, expected.storePath)
  }

  onCommit (listener: (nar: CommittedNar) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  async close (): Promise<void> {}

  #commit (manifest: Manifest, storePath?: string): void {
    if (this.manifests.has(manifest.narHash.toNix32())) return
    this.manifests.set(manifest.narHash.toNix32(), manifest)
    for (const l of this.#listeners) l(storePath === undefined ? { manifest } : { manifest, storePath })
  }
}
