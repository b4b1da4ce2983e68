/** Opening a chunk store on a fresh state directory, NAR identities of test bytes, and chunk records on disk to spoil. */
import { createHash } from 'node:crypto'
import { closeSync, existsSync, openSync, readdirSync, readSync, truncateSync, writeSync } from 'node:fs'
import { NixHash } from '../../src/nix/hash.ts'
import { LocalChunkStore, type LocalChunkStoreInit } from '../../src/chunk/store.ts'
import type { NarIdentity } from '../../src/chunk/types.ts'
import { hexOf } from '../../src/chunk/files.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'
import { tempDir } from '../helpers/temp.ts'

export async function openStore (init: Partial<LocalChunkStoreInit> = {}): Promise<LocalChunkStore> {
  const dir = init.dir ?? tempDir('narswarm-chunk-')
  const db = init.db ?? openDatabase(stateDatabase(dir))
  return await LocalChunkStore.open({ ...init, db, dir })
}

export function identity (bytes: Uint8Array, storePath?: string): NarIdentity {
  const id: NarIdentity = { narHash: NixHash.of('sha256', bytes), narSize: bytes.length }
  if (storePath !== undefined) id.storePath = storePath
  return id
}

/** The NarIdentity of a stream, read once. */
export async function identityOf (body: AsyncIterable<Uint8Array>): Promise<NarIdentity> {
  const h = createHash('sha256')
  let size = 0
  for await (const c of body) { h.update(c); size += c.length }
  return { narHash: new NixHash('sha256', new Uint8Array(h.digest())), narSize: size }
}

/** Where a chunk's record lies on disk: its pack file (or, in a store made before packs, its own file), offset and length. */
export function recordOf (store: LocalChunkStore, id: Uint8Array): { file: string, offset: number, length: number } {
  const row = store.index.chunk(id)
  if (row === undefined) throw new Error(`chunk ${hexOf(id)} is not in the index`)
  return row.pack === undefined
    ? { file: store.files.path(hexOf(id)), offset: 0, length: row.storedSize }
    : { file: store.files.packPath(row.pack), offset: row.offset, length: row.storedSize }
}

/** A chunk's record as it is on disk (header byte and body). */
export function readRecord (store: LocalChunkStore, id: Uint8Array): Buffer {
  const { file, offset, length } = recordOf(store, id)
  const fd = openSync(file, 'r')
  try {
    const bytes = Buffer.alloc(length)
    readSync(fd, bytes, 0, length, offset)
    return bytes
  } finally {
    closeSync(fd)
  }
}

/** Overwrites a chunk's record in place with as many bytes as it has (a disk gone bad). */
export function overwriteRecord (store: LocalChunkStore, id: Uint8Array, bytes: Uint8Array): void {
  const { file, offset, length } = recordOf(store, id)
  if (bytes.length !== length) throw new Error(`a record of ${length} bytes, not ${bytes.length}`)
  const fd = openSync(file, 'r+')
  try {
    writeSync(fd, bytes, 0, length, offset)
  } finally {
    closeSync(fd)
  }
}

/** Flips the last bit of a chunk's record on disk. */
export function corruptRecord (store: LocalChunkStore, id: Uint8Array): void {
  const record = readRecord(store, id)
  record[record.length - 1]! ^= 1
  overwriteRecord(store, id, record)
}

/** Cuts the chunk's pack (or file) short right before its record, so that it and what follows are lost. */
export function cutBefore (store: LocalChunkStore, id: Uint8Array): void {
  const { file, offset } = recordOf(store, id)
  truncateSync(file, offset)
}

/** Temporary files in the store's `tmp` directory (the layout before packs), none when it is gone. */
export function tempFiles (store: LocalChunkStore): string[] {
  return existsSync(store.files.tmp) ? readdirSync(store.files.tmp) : []
}
