/** Opening a chunk store on a fresh state directory, and NAR identities of test bytes. */
import { createHash } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import { LocalChunkStore, type LocalChunkStoreInit } from '../../src/chunk/store.ts'
import type { NarIdentity } from '../../src/chunk/types.ts'
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
