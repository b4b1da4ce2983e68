/**
 * xz decoding in-process with liblzma (through lzma-native's native stream), with the output of
 * one call bounded. lzma-native's own stream decodes each input chunk it is given to the end and
 * queues all of the output without backpressure, so a small chunk of a decompression bomb became
 * gigabytes in memory (xz reaches ~7000:1 on zeros: 256 MiB → 39 KB). Here the native decoder is
 * called on slices of at most XZ_SLICE input bytes, one at a time, so one call produces at most
 * XZ_SLICE × 7000 bytes (~1.7 MiB); the caller decides when to feed the next slice, so nothing is
 * decoded ahead of what is read. While the data expands like ordinary data (and at the start),
 * each slice is decoded synchronously, a fraction of a millisecond; once it expands more, calls
 * run on libuv's thread pool, as lzma-native's stream did, so a bomb's slices take a worker
 * thread, not the event loop. Concatenated streams and the zero padding between them are read as
 * `xz -d` reads them.
 */
import { createRequire } from 'node:module'

/** Input bytes per native call: its output is at most ~7000 times this (~1.7 MiB). */
export const XZ_SLICE = 256
/**
 * The decoders (this one and the `xz` program) refuse a stream whose dictionary needs more memory
 * (`xz -9e` needs 65 MiB): the dictionary size is in the stream's header, which anyone may write.
 */
export const XZ_MEMLIMIT = 256 * 1024 * 1024
/**
 * Output buffer size of the native decoder, allocated afresh by every call: small for the small
 * synchronous calls, large for a thread-pool call that may return megabytes.
 */
const SYNC_BUFSIZE = 16 * 1024
const ASYNC_BUFSIZE = 256 * 1024
/**
 * After CHEAP_RUN calls in a row whose input expanded at most CHEAP_RATIO times (ordinary NARs:
 * 3–6×), calls are made synchronously: a thread-pool round trip per slice cost ordinary data a
 * quarter of its speed. One call makes at most ~1.7 MiB (~20 ms on zeros); anything more
 * expansive sends the decoder back to the thread pool at once.
 */
const CHEAP_RATIO = 16
const CHEAP_RUN = 2

interface NativeStream {
  bufferHandler: (buf: Buffer | null | undefined, processed: number | undefined, err: Error | null | undefined, totalIn: number | null, totalOut: number | null) => void
  code: (input: Uint8Array | null, async: boolean) => void
  streamDecoder: (options: { memlimit?: number }) => void
  resetUnderlying: () => void
  setBufsize: (n: number) => number
}

const require = createRequire(import.meta.url)

export class XzDecoder {
  readonly #s: NativeStream
  #out: Buffer[] = []
  #error: Error | undefined
  #streamEnded = false
  #totalIn = 0
  /** Input given to the current stream before the current call. */
  #streamIn = 0
  #inStream = false
  #streams = 0
  #done: (() => void) | undefined
  #outBytes = 0
  /** How many calls in a row expanded their input like ordinary data (the first call is synchronous). */
  #cheapRun = CHEAP_RUN

  constructor () {
    const lzma = require('lzma-native') as { Stream: new () => NativeStream }
    this.#s = new lzma.Stream()
    this.#s.setBufsize(SYNC_BUFSIZE)
    this.#s.bufferHandler = (buf, processed, err, totalIn) => {
      if (typeof totalIn === 'number') this.#totalIn = totalIn
      if (err !== undefined && err !== null) this.#error ??= err
      else if (buf === null) this.#streamEnded = true
      else if (buf !== undefined) { this.#out.push(buf); this.#outBytes += buf.length }
      if (typeof processed === 'number' || (err !== undefined && err !== null)) { const done = this.#done; this.#done = undefined; done?.() }
    }
  }

  /** Decodes `input` (at most XZ_SLICE bytes); returns the output. Throws on bad input. */
  async write (input: Uint8Array): Promise<Buffer[]> {
    let rest = input
    while (rest.length > 0) {
      if (!this.#inStream) {
        // Between streams only zero padding may come; anything else starts the next stream.
        let i = 0
        while (i < rest.length && rest[i] === 0) i++
        if (i > 0 && this.#streams === 0) throw new Error('input does not start with an xz stream')
        rest = rest.subarray(i)
        if (rest.length === 0) break
        this.#s.streamDecoder({ memlimit: XZ_MEMLIMIT })
        this.#inStream = true
        this.#streamIn = 0
        this.#totalIn = 0
        this.#streams++
      }
      const sync = this.#cheapRun >= CHEAP_RUN
      const piece = rest
      const before = this.#outBytes
      this.#streamEnded = false
      if (sync) this.#s.code(piece, false)
      else await this.#code(piece)
      if (this.#error !== undefined) throw this.#error
      this.#cheapRun = this.#outBytes - before <= CHEAP_RATIO * piece.length ? this.#cheapRun + 1 : 0
      if ((this.#cheapRun >= CHEAP_RUN) !== sync) this.#s.setBufsize(sync ? ASYNC_BUFSIZE : SYNC_BUFSIZE)
      if (this.#streamEnded) {
        // The native decoder drops what follows the end of a stream within the call's input.
        rest = rest.subarray(this.#totalIn - this.#streamIn)
        this.#inStream = false
      } else {
        this.#streamIn += piece.length
        rest = rest.subarray(piece.length)
      }
    }
    return this.#take()
  }

  /** Finishes after the last input; returns the remaining output. Throws if a stream is incomplete. */
  async end (): Promise<Buffer[]> {
    if (this.#streams === 0) throw new Error('empty input')
    if (this.#inStream) {
      await this.#code(null)
      if (this.#error !== undefined) throw this.#error
      if (!this.#streamEnded) throw new Error('truncated input')
      this.#inStream = false
    }
    return this.#take()
  }

  /** One call of the native decoder on the thread pool; resolves once it has handed over its output. */
  async #code (input: Uint8Array | null): Promise<void> {
    await new Promise<void>(resolve => {
      this.#done = resolve
      try {
        this.#s.code(input, true)
      } catch (err) {
        this.#error ??= err as Error
        this.#done = undefined
        resolve()
      }
    })
  }

  close (): void {
    this.#s.resetUnderlying()
  }

  #take (): Buffer[] {
    const out = this.#out
    this.#out = []
    return out
  }
}
