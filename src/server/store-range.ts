/**
 * Bytes [start, end) of a NAR the chunk store holds. The whole NAR goes through `render` (which
 * counts as an access for eviction); a range starts at the chunk that holds `start`, so resuming a
 * large NAR near its end does not read everything before it. Every chunk is checked against its id
 * by the store as it is read; a chunk that went missing in between fails the stream.
 */
import { IntegrityError } from '../errors.ts'
import type { NixHash } from '../nix/hash.ts'
import type { ChunkStore } from '../chunk/types.ts'

/** Undefined when the store does not hold the NAR. */
export function renderRange (store: ChunkStore, narHash: NixHash, start: number, end: number, signal?: AbortSignal): AsyncIterable<Uint8Array> | undefined {
  const manifest = store.manifest(narHash)
  if (manifest === undefined) return undefined
  if (start === 0 && end === manifest.narSize) return store.render(narHash, { signal })
  return (async function * () {
    let offset = 0
    for (const chunk of manifest.chunks) {
      const from = Math.max(start - offset, 0)
      const to = Math.min(end - offset, chunk.size)
      offset += chunk.size
      if (from >= to) {
        if (offset >= end) return
        continue
      }
      const bytes = await store.readChunk(chunk.id, { signal })
      if (bytes === undefined) throw new IntegrityError(`chunk of NAR ${narHash.toString()} is gone from the store`)
      yield bytes.subarray(from, to)
    }
  })()
}
