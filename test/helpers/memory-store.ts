/**
 * A ChunkStore in memory, for unit tests of code that uses the interface (fixed 64 KiB chunks,
 * no eviction). The real store is tested on its own and end to end; this one can be told to fail
 * like a full disk.
 */
import { createHash } from 'node:crypto'
import { IntegrityError, StorageError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import type { ChunkId, ChunkStore, CommittedNar, Manifest, NarIdentity } from '../../src/chunk/types.ts'

const CHUNK = 64 * 1024
const key = (id: ChunkId): string => Buffer.from(id).toString('hex')

export class MemoryStore implements ChunkStore {
  readonly cdcId = 'memory-test/65536'
  readonly chunks = new Map<string, Uint8Array>()
  readonly manifests = new Map<string, Manifest>()
  /** While true, every write throws StorageError (a full disk). */
  full = false
  ingests = 0
  readonly #listeners = new Set<(nar: CommittedNar) => void>()

  manifest (narHash: NixHash): Manifest | undefined { return this.manifests.get(narHash.toNix32()) }
  has (ids: readonly ChunkId[]): boolean[] { return ids.map(id => this.chunks.has(key(id))) }
  async readChunk (id: ChunkId): Promise<Uint8Array | undefined> { return this.chunks.get(key(id)) }

  render (narHash: NixHash): AsyncIterable<Uint8Array> | undefined {
    const manifest = this.manifest(narHash)
    if (manifest === undefined) return undefined
    const chunks = this.chunks
    return (async function * () { for (const c of manifest.chunks) yield chunks.get(key(c.id))! })()
  }

  async ingest (expected: NarIdentity, body: AsyncIterable<Uint8Array>): Promise<Manifest> {
    this.ingests++
    const parts: Buffer[] = []
    for await (const chunk of body) {
      if (this.full) throw new StorageError('no space left on device (test)')
      parts.push(Buffer.from(chunk))
    }
    const nar = Buffer.concat(parts)
    if (nar.length !== expected.narSize || !NixHash.of('sha256', nar).equals(expected.narHash)) throw new IntegrityError('NAR does not match')
    const chunks = []
    for (let offset = 0; offset < nar.length; offset += CHUNK) {
      const bytes = nar.subarray(offset, offset + CHUNK)
      const id = Uint8Array.from(createHash('sha256').update(bytes).digest())
      this.chunks.set(key(id), bytes)
      chunks.push({ id, size: bytes.length })
    }
    const manifest: Manifest = { cdcId: this.cdcId, narHash: expected.narHash, narSize: expected.narSize, chunks }
    if (!this.manifests.has(expected.narHash.toNix32())) {
      this.manifests.set(expected.narHash.toNix32(), manifest)
      for (const l of this.#listeners) l({ manifest, ...(expected.storePath === undefined ? {} : { storePath: expected.storePath }) })
    }
    return manifest
  }

  async putChunk (id: ChunkId, bytes: Uint8Array): Promise<void> {
    if (this.full) throw new StorageError('no space left on device (test)')
    if (!Buffer.from(createHash('sha256').update(bytes).digest()).equals(id)) throw new IntegrityError('chunk does not match its id')
    this.chunks.set(key(id), bytes)
  }

  async commitManifest (manifest: Manifest, expected: NarIdentity): Promise<void> {
    const parts = manifest.chunks.map(c => this.chunks.get(key(c.id)))
    if (parts.some(p => p === undefined)) throw new IntegrityError('chunks missing')
    const nar = Buffer.concat(parts as Uint8Array[])
    if (nar.length !== expected.narSize || !NixHash.of('sha256', nar).equals(expected.narHash)) throw new IntegrityError('NAR does not match')
    this.manifests.set(expected.narHash.toNix32(), manifest)
  }

  onCommit (listener: (nar: CommittedNar) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  async close (): Promise<void> {}
}
