/**
 * The body of a NAR response as it goes out: batched into few system calls, and paced by the
 * client, so that memory holds a batch or two whatever the NAR's size and the client's speed.
 */
import { once } from 'node:events'
import type { ServerResponse } from 'node:http'
import { giveBack } from '../util/byte-pool.ts'

/**
 * Writes a verified stream to an HTTP client and ends the response. Sources deliver 64 KiB chunks;
 * writing them corked in batches of up to `WRITE_BATCH` bytes (one writev, no copy) saves most of
 * the per-write cost on the one core that also receives and hashes. Waits for the socket's 'drain', so a slow client
 * slows the source (back-pressure) instead of filling memory.
 */
export async function sendBody (body: AsyncIterable<Uint8Array>, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const batch: Uint8Array[] = []
  let size = 0
  const flush = async (): Promise<void> => {
    // Corked, the pieces go out in one writev, without a copy into one buffer. Pieces lent from a
    // pool go back once the socket is done with them (the last write's callback comes after the
    // earlier ones'); after a failed write they are left to the collector.
    const pieces = batch.splice(0)
    res.cork()
    for (let i = 0; i < pieces.length; i++) {
      if (i < pieces.length - 1) res.write(pieces[i])
      else res.write(pieces[i], err => { if (err === null || err === undefined) for (const piece of pieces) giveBack(piece) })
    }
    res.uncork()
    size = 0
    // The socket's own state, not the response's: a corked chunked response (no length: zstd)
    // reports that it needs a drain once its buffer passes the high-water mark, and no 'drain'
    // follows unless the socket itself was full.
    const socket = res.socket
    if (socket !== null && socket.writableNeedDrain) await once(socket, 'drain', { signal })
  }
  for await (const chunk of body) {
    batch.push(chunk)
    size += chunk.length
    if (size >= WRITE_BATCH) await flush()
  }
  if (size > 0) await flush()
  await new Promise<void>((resolve, reject) => {
    res.end(() => resolve())
    res.once('error', reject)
  })
}

const WRITE_BATCH = 512 * 1024
