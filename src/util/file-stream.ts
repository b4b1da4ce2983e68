/**
 * A file's bytes as an async iterable, for backends that serve NARs from disk. The file is opened
 * only when read, so a source that is never read holds no descriptor; the read buffer fits the
 * file (a 1 MiB buffer for every small NAR made garbage collection a fifth of the work of serving
 * them); an abort rethrows the caller's own reason rather than Node's generic AbortError. Also:
 * ending a temporary file's write stream before the file is removed.
 */
import { createReadStream, type WriteStream } from 'node:fs'
import { once } from 'node:events'
import type { FileHandle } from 'node:fs/promises'

const READ_CHUNK = 1 << 20

/** `open`, when given, opens the file instead (e.g. with checks); the stream closes what it returns. */
export async function * readFileChunks (path: string, options: { size?: number, signal?: AbortSignal, open?: () => Promise<FileHandle> } = {}): AsyncGenerator<Uint8Array> {
  const { size, signal } = options
  const highWaterMark = size === undefined ? READ_CHUNK : Math.min(READ_CHUNK, Math.max(size + 1, 16 * 1024))
  const fd = await options.open?.()
  const stream = createReadStream(path, { highWaterMark, ...(signal === undefined ? {} : { signal }), ...(fd === undefined ? {} : { fd }) })
  try {
    for await (const chunk of stream) yield chunk as Uint8Array
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw err
  } finally {
    stream.destroy()
  }
}

/**
 * Ends `out` and waits until its file is closed. A write whose source fails at once can beat the
 * stream's own open of the file; removing the file before the open completes leaves it behind.
 */
export async function closedWriteStream (out: WriteStream): Promise<void> {
  out.destroy()
  if (!out.closed) await once(out, 'close').catch(() => {})
}
