/**
 * What the three IPFS backends share when they open a locator: the CID it names, its root block
 * fetched within `timeout` (so `open` resolves when the first bytes are ready), and a body that
 * reads the rest with every later block allowed `stall-timeout`. A timeout is an UpstreamError
 * marked as such, never absence: nobody answering for a CID proves nothing about the CID.
 */
import type { CID } from 'multiformats/cid'
import { FormatError, IntegrityError, UpstreamError } from '../../errors.ts'
import type { Locator, NarSource } from '../../types.ts'
import { contiguous, type BlockBytes } from './block-bytes.ts'
import { decodeFileNode, readFile, type GetBlock } from './dag-reader.ts'
import { cidOf } from './locator.ts'
import type { FetchOptions } from './spec.ts'

/**
 * Opens the file at `locator` from `getBlock`; undefined when the locator is not an IPFS file
 * locator, or when `getBlock` resolves the root to undefined (a source that can say "absent").
 */
export async function openFile (
  source: string,
  locator: Locator,
  getBlock: (cid: CID, options: { signal: AbortSignal, root: boolean, offset: number }) => Promise<BlockBytes | undefined>,
  fetch: FetchOptions,
  signal?: AbortSignal
): Promise<NarSource | undefined> {
  signal?.throwIfAborted()
  const cid = cidOf(locator.url)
  if (cid === undefined) return undefined
  const rootBlock = await timed(source, cid, fetch.timeout, signal, async s => await getBlock(cid, { signal: s, root: true, offset: 0 }))
  if (rootBlock === undefined) return undefined
  const root = decodeFileNode(cid, contiguous(rootBlock))
  const rest: GetBlock = async (c, o) => {
    const block = await timed(source, c, fetch.stallTimeout, o.signal, async s => await getBlock(c, { signal: s, root: false, offset: o.offset }))
    if (block === undefined) throw new UpstreamError(source, `block ${c.toString()} of ${cid.toString()} is missing`)
    return block
  }
  const options = signal === undefined ? { readAhead: fetch.readAhead } : { readAhead: fetch.readAhead, signal }
  return { body: readFile(root, rest, options), compression: 'none', fileSize: root.size }
}

/** Runs one block fetch with a deadline; failures other than bad content become UpstreamErrors. */
async function timed<T> (source: string, cid: CID, ms: number, signal: AbortSignal | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = AbortSignal.timeout(ms)
  try {
    return await run(signal === undefined ? deadline : AbortSignal.any([signal, deadline]))
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    if (err instanceof IntegrityError || err instanceof FormatError || err instanceof UpstreamError) throw err
    if (deadline.aborted) throw new UpstreamError(source, `no provider delivered block ${cid.toString()} within ${ms} ms`, { timeout: true, cause: err })
    throw new UpstreamError(source, `block ${cid.toString()}: ${(err as Error).message}`, { cause: err })
  }
}
