/**
 * The chunk store as the rest of narswarm sees it (DESIGN.md "Storage"). Every NAR narswarm has
 * verified is kept as content-defined chunks (FastCDC 16/64/256 KiB), each named by the SHA-256 of
 * its uncompressed bytes, so a chunk is also an IPFS raw block, two versions of a package share
 * most of their chunks, and a LAN peer can be asked for exactly the chunks a node lacks. A NAR is
 * its manifest: the ordered list of its chunk ids and sizes, keyed by NarHash.
 *
 * Trust: a manifest is committed only after the whole NAR it describes hashed to the signed
 * NarHash and NarSize; a chunk is re-hashed whenever it is read, and one that fails is deleted,
 * never served. A manifest that came from a peer is a hint, never trusted until it was rendered
 * and verified here.
 */
import type { NixHash } from '../nix/hash.ts'
import type { AbortOptions } from '../types.ts'

/** A chunk's id: the 32-byte SHA-256 digest of its uncompressed bytes. */
export type ChunkId = Uint8Array

export interface ManifestChunk {
  id: ChunkId
  size: number
}

/** A NAR as the ordered list of its chunks. */
export interface Manifest {
  /** The chunker's versioned id (parameters and gear table), e.g. `fcdc32-v1/16384/65536/262144`. */
  cdcId: string
  narHash: NixHash
  narSize: number
  chunks: ManifestChunk[]
}

/** What a NAR must be: the signed NarHash and NarSize of its narinfo. */
export interface NarIdentity {
  narHash: NixHash
  narSize: number
  /** The store path, for logs and pins; optional because a bare NAR has none. */
  storePath?: string
}

/** A NAR that was just committed, as announced to listeners (LAN peers, publishing backends). */
export interface CommittedNar {
  manifest: Manifest
  storePath?: string
}

/** One chunk of a NAR as zstd frames, and how many bytes of the NAR it holds. */
export interface ChunkFrames {
  frames: Uint8Array[]
  size: number
}

export interface IngestOptions extends AbortOptions { narHashChecked?: boolean }

export interface PutChunkOptions extends AbortOptions {
  /**
   * The chunk as the peer stored it: a zstd frame of `bytes` that `decodeChunkFile` accepted
   * from a peer; stored as it is, so the chunk is not compressed again.
   */
  compressed?: Uint8Array
  /**
   * Called once the chunk is written, before it is durable (or at once when the store holds it
   * already): the fetch may go on meanwhile, and `putChunk` still resolves only once the chunk is
   * durable and indexed. Not called when the chunk is refused.
   */
  onWritten?: () => void
}

export interface ChunkStore {
  /** The chunker id of this store; peers with another id share only whole NARs. */
  readonly cdcId: string
  /** The bytes it may hold (`cache-size`); 0: it keeps nothing, so fetched NARs are only relayed. */
  readonly capacity: number
  /** The manifest of a committed NAR; undefined when the store does not hold it. */
  manifest: (narHash: NixHash) => Manifest | undefined
  /** The NarSize of a committed NAR, without decoding its manifest; undefined when not held. */
  narSize: (narHash: NixHash) => number | undefined
  /** For each id, whether its chunk is stored (one answer per id, same order). */
  has: (ids: readonly ChunkId[]) => boolean[]
  /**
   * A chunk's uncompressed bytes, checked on reading (a compressed one against the hash of its
   * stored bytes); undefined when absent, or when the stored
   * file failed its hash (it is then deleted, and every NAR that needs it is dropped).
   */
  readChunk: (id: ChunkId, options?: AbortOptions) => Promise<Uint8Array | undefined>
  /**
   * A chunk's file as it is stored (chunk-file.ts: a header byte, then the bytes raw or as one
   * zstd frame), for a peer that stores it as it is; checked and dropped as `renderFrames` does.
   */
  readStoredChunk: (id: ChunkId, options?: AbortOptions) => Promise<Uint8Array | undefined>
  /**
   * The NAR rendered from its chunks, each checked against its id on reading; undefined when the
   * NAR is not committed. Counts as an access for eviction. The stream throws IntegrityError
   * (and the NAR is dropped) if a chunk turns out corrupt, so it never completes with wrong bytes.
   */
  render: (narHash: NixHash, options?: AbortOptions) => AsyncIterable<Uint8Array> | undefined
  /**
   * The NAR as a zstd stream, chunk by chunk, as `render` otherwise: a compressed chunk as it is
   * stored, checked against the hash of its stored bytes; a raw one checked against its id and
   * wrapped in a raw frame. For clients that decode zstd: no chunk is decompressed here.
   */
  renderFrames: (narHash: NixHash, options?: AbortOptions) => AsyncIterable<ChunkFrames> | undefined
  /**
   * Chunks `body` as it streams by, stores the chunks, and commits the manifest only when the
   * whole stream matched `expected` (NarHash and NarSize); throws IntegrityError otherwise, and
   * nothing is committed. Concurrent ingests of one NarHash are allowed; the first commit wins.
   * `narHashChecked`: the body itself ends with an error unless its bytes matched the NarHash
   * (a stream behind `verifyNar`), so the store need not hash it again; the size is still checked.
   * A piece of `body` is done with once the next is asked for: its buffer may then be reused.
   */
  ingest: (expected: NarIdentity, body: AsyncIterable<Uint8Array>, options?: IngestOptions) => Promise<Manifest>
  /** Stores one chunk (from a peer); throws IntegrityError when its bytes do not hash to `id`. */
  putChunk: (id: ChunkId, bytes: Uint8Array, options?: PutChunkOptions) => Promise<void>
  /**
   * Commits a manifest whose chunks are all stored (e.g. fetched from peers), after rendering it
   * and checking the whole NAR against `expected`; throws IntegrityError when it does not match,
   * or when chunks are missing. `narHashChecked`: the caller already hashed the NAR these chunks
   * make, from bytes this store accepted or rendered, and it matched; the store then only checks
   * that every chunk is there.
   */
  commitManifest: (manifest: Manifest, expected: NarIdentity, options?: AbortOptions & { narHashChecked?: boolean }) => Promise<void>
  /** Counts as a use of a committed NAR for eviction (a peer fetching its chunks); optional. */
  touch?: (narHash: NixHash) => void
  /** Called after each commit, whatever the source of the NAR. Returns an unsubscribe function. */
  onCommit: (listener: (nar: CommittedNar) => void) => () => void
  /** Releases resources. Idempotent. */
  close: () => Promise<void>
}

/**
 * A source that fills the chunk store itself instead of handing over a byte stream: LAN peers,
 * which send only the chunks the store lacks. The substituter races it like any other untrusted
 * source and renders the NAR from the store once it is committed.
 */
export interface StoreFiller {
  readonly name: string
  /**
   * Fetches the NAR into `store` and commits it (through `putChunk` and `commitManifest`).
   * Resolves false when no one has it; throws UpstreamError when sources failed.
   */
  fill: (expected: NarIdentity, store: ChunkStore, options?: FillOptions) => Promise<boolean>
}

/** Where a filler puts the NAR's bytes, in order, as it hashes them: one `append` at a time, each awaited before the next. */
export interface NarCopy { append: (pieces: readonly Uint8Array[]) => Promise<void> }

export interface FillOptions extends AbortOptions {
  /**
   * A fresh copy for each manifest the filler tries. Once the fill succeeded, the last copy holds
   * the whole verified NAR, unless the filler could not hash it in order (it then holds less, and
   * the NAR is rendered from the store): the caller can hand the NAR out without reading every
   * chunk back and decompressing it again.
   */
  newCopy?: () => Promise<NarCopy>
}
