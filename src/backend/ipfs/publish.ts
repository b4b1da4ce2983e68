/**
 * Publishing a NAR into any block store: the NAR's bytes are checked against its NarHash and
 * NarSize while they are imported (uncompressed, with the parameters of `import-params.ts`), and
 * the root CID is returned only when both match. A mismatch throws IntegrityError before any root
 * exists, so no locator can ever name unverified bytes (blocks already written are orphans that no
 * locator reaches).
 */
import { importByteStream, type WritableStorage } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import type { AbortOptions, NarUpload } from '../../types.ts'
import { verifyNar } from '../../util/verify.ts'
import { importOptions } from './import-params.ts'
import { RAW } from './locator.ts'

export async function importNar (nar: NarUpload, blocks: WritableStorage, options: AbortOptions = {}): Promise<CID> {
  const body = verifyNar(abortable(nar.body, options.signal), nar, `publishing ${nar.narHash.toString()}`)
  if (nar.narSize === 0) {
    // The importer refuses an empty file; its CID is the empty raw block (as kubo's with raw leaves).
    for await (const _ of body) {}
    const cid = CID.createV1(RAW, await sha256.digest(new Uint8Array(0)))
    await blocks.put(cid, new Uint8Array(0))
    return cid
  }
  const result = await importByteStream(body, blocks, importOptions())
  return result.cid
}

async function * abortable (source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    signal?.throwIfAborted()
    yield chunk
  }
}
