/**
 * Publishing a NAR into any block store: the NAR's bytes are checked against its NarHash and
 * NarSize while they are imported (uncompressed, with the parameters of `import-params.ts`), and
 * the root CID is returned only when both match. A mismatch throws IntegrityError before any root
 * exists, so no locator can ever name unverified bytes (blocks already written are orphans that no
 * locator reaches).
 */
import { importByteStream, type WritableStorage } from 'ipfs-unixfs-importer'
import type { CID } from 'multiformats/cid'
import type { AbortOptions, NarUpload } from '../../types.ts'
import { verifyNar } from '../../util/verify.ts'
import { importOptions } from './import-params.ts'

export async function importNar (nar: NarUpload, blocks: WritableStorage, options: AbortOptions = {}): Promise<CID> {
  const body = verifyNar(abortable(nar.body, options.signal), nar, `publishing ${nar.narHash.toString()}`)
  const result = await importByteStream(body, blocks, importOptions())
  return result.cid
}

async function * abortable (source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    signal?.throwIfAborted()
    yield chunk
  }
}
