/**
 * How a NAR becomes a UnixFS DAG: the import parameters. They decide every CID narswarm publishes,
 * so they are part of the index format (docs/ipfs.md): a peer that imports the same NAR with the
 * same parameters gets the same root CID and shares every block. Changing any value here changes
 * the CIDs of everything published afterwards (old locators keep working: a fetcher walks whatever
 * DAG a CID names).
 *
 * Content-defined chunking (Rabin fingerprints, as kubo's `--chunker=rabin-MIN-AVG-MAX`) cuts at
 * positions chosen by the content, so an insertion or a changed store path early in a NAR moves
 * only the chunks around it; two versions of a package then share most blocks. Leaves are raw
 * blocks (no UnixFS wrapper), CIDs are v1 with sha2-256, the tree is balanced with 174 links a
 * node (kubo's layout), and a NAR that fits in one chunk is that single raw block.
 */
import { rabin } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import type { ImporterOptions } from 'ipfs-unixfs-importer'

export const CHUNK_MIN = 128 * 1024
export const CHUNK_AVG = 256 * 1024
export const CHUNK_MAX = 1024 * 1024
export const MAX_CHILDREN = 174

/** The parameters in kubo's notation, for docs and logs. */
export const IMPORT_PARAMS_TEXT = `cid-version=1 raw-leaves=true chunker=rabin-${CHUNK_MIN}-${CHUNK_AVG}-${CHUNK_MAX} layout=balanced-${MAX_CHILDREN} hash=sha2-256`

/**
 * Importer options for one NAR. At most 8 chunks are hashed and written at once, so memory during
 * an import is a few chunks, not the file.
 */
export function importOptions (): ImporterOptions {
  return {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: rabin({ minChunkSize: CHUNK_MIN, avgChunkSize: CHUNK_AVG, maxChunkSize: CHUNK_MAX }),
    layout: balanced({ maxChildrenPerNode: MAX_CHILDREN }),
    blockWriteConcurrency: 8,
    fileImportConcurrency: 1
  }
}
