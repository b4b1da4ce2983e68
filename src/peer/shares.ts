/**
 * What this node offers to LAN peers, and nothing more (DESIGN.md "Trust"): a NAR is shared only
 * when it is committed in the chunk store (so it verified against its NarHash) and a narinfo in
 * the cache names it with a valid signature by a trusted key. A narinfo accepted without one — from
 * a `require-sigs=false` upstream, or on a content-address claim — is used locally but never
 * shared; neither are local store paths, local files or locators, which this module never sees.
 *
 * Chunks are shared only as parts of a shared NAR: the ids of every shared NAR's chunks are kept
 * in a set (filled by a scan of the narinfo cache at start and by each commit), so a chunk of a
 * private NAR cannot be confirmed to exist by someone who guesses its contents.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import type { ChunkId, ChunkStore, Manifest } from '../chunk/types.ts'
import type { Logger } from '../log.ts'
import { NarInfo } from '../nix/narinfo.ts'
import type { NixHash } from '../nix/hash.ts'
import { trustedKeyMap, verifyNarInfo, type PublicKey } from '../nix/signature.ts'
import type { NarInfoCache } from '../state/narinfo-cache.ts'
import { ExpiringLru } from '../util/lru.ts'

export interface PeerSharesInit {
  store: ChunkStore
  cache: NarInfoCache
  /** Keys whose signature makes a narinfo shareable: the upstreams' and the index keys, and the node's own. */
  trustedKeys: Iterable<string>
  log: Logger
}

export class PeerShares {
  readonly #store: ChunkStore
  readonly #cache: NarInfoCache
  readonly #keys: ReadonlyMap<string, PublicKey>
  readonly #log: Logger
  /** Ids (as binary strings) of the chunks of shared NARs. */
  readonly #chunks = new Set<string>()
  /** Verdicts by narinfo text, so a busy NAR is not re-verified for every peer. */
  readonly #verdicts = new ExpiringLru<string, boolean>(8192)
  readonly #unsubscribe: () => void
  #closed = false

  constructor (init: PeerSharesInit) {
    this.#store = init.store
    this.#cache = init.cache
    this.#keys = trustedKeyMap([...init.trustedKeys])
    this.#log = init.log
    this.#unsubscribe = init.store.onCommit(({ manifest }) => {
      if (this.#sharedNarInfos(manifest.narHash).length > 0) this.#addChunks(manifest)
    })
  }

  /** Fills the chunk set from everything already held; runs in the background, yielding often. */
  async scan (): Promise<number> {
    let nars = 0
    let n = 0
    for (const text of this.#cache.presentTexts()) {
      if (this.#closed) break
      if (++n % 256 === 0) await yieldToLoop()
      let narInfo: NarInfo
      try {
        narInfo = NarInfo.parse(text)
      } catch { continue }
      const manifest = this.#store.manifest(narInfo.narHash)
      if (manifest !== undefined && this.#trusted(text, narInfo)) {
        this.#addChunks(manifest)
        nars++
      }
    }
    this.#log.debug({ nars, chunks: this.#chunks.size }, 'shared NARs scanned')
    return nars
  }

  /** The signed narinfo text of a store path whose NAR is shared; undefined otherwise. */
  narInfo (hashPart: string): string | undefined {
    const cached = this.#cache.get(hashPart)
    if (cached?.present !== true) return undefined
    let narInfo: NarInfo
    try {
      narInfo = NarInfo.parse(cached.text)
    } catch { return undefined }
    if (!this.#trusted(cached.text, narInfo) || this.#store.manifest(narInfo.narHash) === undefined) return undefined
    return cached.text
  }

  /**
   * The manifest of a shared NAR; undefined when it is not held or not shareable. A peer asks for
   * it to fetch the NAR's chunks, so it counts as a use of the NAR for eviction, like a render.
   */
  manifest (narHash: NixHash): Manifest | undefined {
    const manifest = this.#store.manifest(narHash)
    if (manifest === undefined || this.#sharedNarInfos(narHash).length === 0) return undefined
    this.#store.touch?.(narHash)
    this.#addChunks(manifest)
    return manifest
  }

  /** A signed narinfo naming this NarHash when the NAR is shared; undefined otherwise. */
  narInfoOf (narHash: NixHash): string | undefined {
    return this.#store.manifest(narHash) === undefined ? undefined : this.#sharedNarInfos(narHash)[0]
  }

  /** Whether a chunk belongs to a shared NAR (it may still have been evicted since). */
  chunkShared (id: ChunkId): boolean {
    return this.#chunks.has(key(id))
  }

  close (): void {
    this.#closed = true
    this.#unsubscribe()
  }

  #sharedNarInfos (narHash: NixHash): string[] {
    return this.#cache.findByNarHash(narHash.toNix32()).map(r => r.text).filter(text => {
      try {
        return this.#trusted(text, NarInfo.parse(text))
      } catch { return false }
    })
  }

  #trusted (text: string, narInfo: NarInfo): boolean {
    let verdict = this.#verdicts.get(text)
    if (verdict === undefined) {
      verdict = verifyNarInfo(narInfo, this.#keys).validKeyNames.length > 0
      this.#verdicts.set(text, verdict, Infinity)
    }
    return verdict
  }

  #addChunks (manifest: Manifest): void {
    for (const c of manifest.chunks) this.#chunks.add(key(c.id))
  }
}

function key (id: ChunkId): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')
}
