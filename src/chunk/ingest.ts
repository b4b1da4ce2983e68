/**
 * Ingesting a NAR into the chunk store in one pass: the stream is hashed (NarHash; not when the
 * body checks it itself, `narHashChecked`), counted (NarSize) and chunked as it goes by, each chunk written as soon as it is cut, at most
 * WRITES_IN_FLIGHT at a time, so memory is a few chunks whatever the NAR's size. The manifest is
 * committed only if the whole stream matched; otherwise the chunks this ingest wrote and nothing
 * else uses are removed again. The chunks it needs are held meanwhile, so neither eviction nor
 * another failed ingest removes them under it.
 */
import { createHash } from 'node:crypto'
import { IntegrityError } from '../errors.ts'
import { Chunker } from './fastcdc.ts'
import { chunkIdOf, hexOf } from './files.ts'
import type { LocalChunkStore } from './store.ts'
import type { IngestOptions, Manifest, ManifestChunk, NarIdentity } from './types.ts'

/**
 * Chunks written by one ingest at a time at most (the writer's eight buffers bound memory anyway),
 * each until it is durable. Waiting for the syncs paces an ingest that tails a relay, which would
 * otherwise take the CPU from the relay Nix waits for (a fill from peers, which nobody waits
 * behind, goes on while they run: filler.ts).
 */
const WRITES_IN_FLIGHT = 8

export async function ingestNar (store: LocalChunkStore, expected: NarIdentity, body: AsyncIterable<Uint8Array>, options?: IngestOptions): Promise<Manifest> {
  const signal = options?.signal
  const existing = store.manifest(expected.narHash)
  if (existing !== undefined && existing.narSize === expected.narSize) {
    await close(body)
    if (expected.storePath !== undefined) store.index.addPath(expected.storePath, expected.narHash.digest)
    return existing
  }
  // The body is closed whatever happens: a failure before it is read must not leave its source
  // (an HTTP response, a nix-store process) open.
  try {
    await store.maintenance.makeRoom(expected.narSize)
  } catch (err) {
    await close(body)
    throw err
  }
  // A body that checks its own NarHash (a fetch behind verifyNar) is not hashed twice.
  const hasher = options?.narHashChecked === true ? undefined : createHash(expected.narHash.algorithm)
  // Chunks are built in one reused buffer: `put` copies each chunk for its write, or finds it
  // stored, before its first await, so a chunk is done with before the next piece is pushed.
  const chunker = new Chunker(store.params, { reuse: true })
  const chunks: ManifestChunk[] = []
  const held: string[] = []
  const written: string[] = []
  const inFlight = new Set<Promise<void>>()
  let failure: unknown
  let size = 0
  // Chunk ids live in shared slabs: a separate array per id costs hundreds of bytes each.
  let slab = new Uint8Array(0)
  let used = 0
  const put = async (bytes: Uint8Array): Promise<void> => {
    if (used === slab.length) { slab = new Uint8Array(32 * 1024); used = 0 }
    const id = slab.subarray(used, used + 32)
    id.set(chunkIdOf(bytes))
    used += 32
    const hex = hexOf(id)
    chunks.push({ id, size: bytes.length })
    store.inUse.hold(hex)
    held.push(hex)
    const p = store.storeChunk(hex, id, bytes).then(wrote => { if (wrote) written.push(hex) }, (err: unknown) => { failure ??= err })
    inFlight.add(p)
    void p.then(() => inFlight.delete(p))
    if (inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(inFlight)
    if (failure !== undefined) throw failure
  }
  try {
    for await (const piece of body) {
      signal?.throwIfAborted()
      size += piece.length
      if (size > expected.narSize) throw new IntegrityError(`NAR ${expected.narHash.toString()} is longer than its NarSize ${expected.narSize}`)
      hasher?.update(piece)
      for (const c of chunker.push(piece)) await put(c)
    }
    const last = chunker.finish()
    if (last !== undefined) await put(last)
    await Promise.all(inFlight)
    if (failure !== undefined) throw failure
    if (size !== expected.narSize) throw new IntegrityError(`NAR ${expected.narHash.toString()} has ${size} bytes, its NarSize is ${expected.narSize}`)
    const digest = hasher?.digest()
    if (digest !== undefined && !digest.equals(expected.narHash.digest)) throw new IntegrityError(`NAR hashes to ${expected.narHash.algorithm}:${digest.toString('hex')}, expected ${expected.narHash.toString()}`)
    const manifest: Manifest = { cdcId: store.cdcId, narHash: expected.narHash, narSize: size, chunks }
    return store.commitVerified(manifest, expected.storePath)
  } catch (err) {
    await Promise.allSettled(inFlight)
    for (const hex of held.splice(0)) store.inUse.unhold(hex)
    await store.maintenance.removeUnreferenced(written)
    throw err
  } finally {
    for (const hex of held) store.inUse.unhold(hex)
  }
}

async function close (body: AsyncIterable<Uint8Array>): Promise<void> {
  await (body[Symbol.asyncIterator]() as AsyncIterator<Uint8Array> & { return?: () => unknown }).return?.()
}
