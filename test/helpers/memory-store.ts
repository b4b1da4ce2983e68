/**
 * A ChunkStore in memory, for unit tests of code that uses the interface (fixed-size chunks, 64 KiB
 * unless told otherwise; no eviction). The real store is tested on its own and end to end; this
 * one can be told to fail like a full disk.
 */
import { IntegrityError, StorageError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { chunkIdOf, hexOf } from '../../src/chunk/files.ts'
import { rawFrame } from '../../src/nix/zstd-frames.ts'
import { encodeChunk } from '../../src/chunk/chunk-file.ts'
import type { ChunkFrames, ChunkId, ChunkStore, CommittedNar, Manifest, NarIdentity, PutChunkOptions } from '../../src/chunk/types.ts'

export class MemoryStore implements ChunkStore {
  readonly cdcId: string
  readonly #chunkSize: number
  readonly chunks = new Map<string, Uint8Array>()
  readonly manifests = new Map<string, Manifest>()
  /** Never enforced: 0 only tells the code that uses the store it keeps nothing. */
  capacity = Infinity
  /** While true, every write throws StorageError (a full disk). */
  full = false
  ingests = 0
  /** Chunks put with the compressed frame they came in. */
  compressedPuts = 0
  /** NarHashes (nix32) touched, in order: uses that count for eviction besides renders. */
  readonly touched: string[] = []
  readonly #listeners = new Set<(nar: CommittedNar) => void>()

  constructor (chunkSize = 64 * 1024) {
    this.#chunkSize = chunkSize
    this.cdcId = `memory-test/${chunkSize}`
  }

  /** The manifest and chunks this store makes of `nar` (nothing is stored). */
  split (nar: Uint8Array): { manifest: Manifest, parts: Uint8Array[] } {
    const parts: Uint8Array[] = []
    for (let offset = 0; offset < nar.length; offset += this.#chunkSize) parts.push(nar.subarray(offset, offset + this.#chunkSize))
    const chunks = parts.map(bytes => ({ id: chunkIdOf(bytes), size: bytes.length }))
    return { parts, manifest: { cdcId: this.cdcId, narHash: NixHash.of('sha256', nar), narSize: nar.length, chunks } }
  }

  manifest (narHash: NixHash): Manifest | undefined { return this.manifests.get(narHash.toNix32()) }
  narSize (narHash: NixHash): number | undefined { return this.manifests.get(narHash.toNix32())?.narSize }
  has (ids: readonly ChunkId[]): boolean[] { return ids.map(id => this.chunks.has(hexOf(id))) }
  async readChunk (id: ChunkId): Promise<Uint8Array | undefined> { return this.chunks.get(hexOf(id)) }
  /** Encoded as the real store encodes chunk files, so peers exchange compressed chunks too. */
  async readStoredChunk (id: ChunkId): Promise<Uint8Array | undefined> {
    const bytes = this.chunks.get(hexOf(id))
    if (bytes === undefined) return undefined
    const { flag, body } = encodeChunk(bytes)
    return Buffer.concat([Uint8Array.of(flag), body])
  }
  touch (narHash: NixHash): void { this.touched.push(narHash.toNix32()) }

  render (narHash: NixHash): AsyncIterable<Uint8Array> | undefined {
    const manifest = this.manifest(narHash)
    if (manifest === undefined) return undefined
    const chunks = this.chunks
    return (async function * () { for (const c of manifest.chunks) yield chunks.get(hexOf(c.id))! })()
  }

  renderFrames (narHash: NixHash): AsyncIterable<ChunkFrames> | undefined {
    const body = this.render(narHash)
    if (body === undefined) return undefined
    return (async function * () { for await (const bytes of body) yield { frames: rawFrame(bytes), size: bytes.length } })()
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
    const { manifest, parts: chunks } = this.split(nar)
    chunks.forEach((bytes, i) => this.chunks.set(hexOf(manifest.chunks[i]!.id), bytes))
    this.#commit(manifest, expected)
    return manifest
  }

  async putChunk (id: ChunkId, bytes: Uint8Array, options?: PutChunkOptions): Promise<void> {
    if (this.full) throw new StorageError('no space left on device (test)')
    if (hexOf(chunkIdOf(bytes)) !== hexOf(id)) throw new IntegrityError('chunk does not match its id')
    if (options?.compressed !== undefined) this.compressedPuts++
    this.chunks.set(hexOf(id), bytes)
  }

  /** Hashes the NAR whatever `narHashChecked` says: a test double checks more, not less. */
  async commitManifest (manifest: Manifest, expected: NarIdentity, _options?: Parameters<ChunkStore['commitManifest']>[2]): Promise<void> {
    const parts = manifest.chunks.map(c => this.chunks.get(hexOf(c.id)))
    if (parts.some(p => p === undefined)) throw new IntegrityError('chunks missing')
    const nar = Buffer.concat(parts as Uint8Array[])
    if (nar.length !== expected.narSize || !NixHash.of('sha256', nar).equals(expected.narHash)) throw new IntegrityError('NAR does not match')
    this.#commit(manifest, expected)
  }

  #commit (manifest: Manifest, expected: NarIdentity): void {
    if (this.manifests.has(expected.narHash.toNix32())) return
    this.manifests.set(expected.narHash.toNix32(), manifest)
    for (const l of this.#listeners) l({ manifest, ...(expected.storePath === undefined ? {} : { storePath: expected.storePath }) })
  }

  onCommit (listener: (nar: CommittedNar) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  async close (): Promise<void> {}
}
