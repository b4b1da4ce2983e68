/**
 * xz decoding in-process with liblzma 5.8 compiled to WebAssembly (vendor/liblzma-wasm), driven
 * through `lzma_code` with an output buffer of OUT_SIZE bytes: one call produces at most that
 * much, and the caller decides when to make the next, so a decompression bomb is decoded only as
 * far as it is read. It decodes at the `xz` program's speed (60–69 MiB/s on 120 MB of /usr/lib
 * here, where the native lzma-native binding it replaced, built on liblzma 5.2.3, did 35), needs
 * no native module, and a fault in the decoder is a JavaScript exception rather than a crashed
 * process. Concatenated streams and the padding between them are read as `xz -d` reads them
 * (LZMA_CONCATENATED).
 *
 * Each decoder runs in an instance of the module of its own (about 2 ms to make): a WebAssembly
 * memory only grows, so a few instances whose memory stayed small are kept for the next decoders
 * and the others are left to the garbage collector with their dictionaries.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

/**
 * The decoders (this one and the `xz` program) refuse a stream whose dictionary needs more memory
 * (`xz -9e` needs 65 MiB): the dictionary size is in the stream's header, which anyone may write.
 */
export const XZ_MEMLIMIT = 256 * 1024 * 1024

/** Input copied into the module at a time (`push`), and output per call at most. */
export const XZ_INPUT = 64 * 1024
const OUT_SIZE = 256 * 1024
/** Instances kept for reuse, and the memory an instance may have grown to and still be kept. */
const POOL_SIZE = 2
const POOL_MAX_MEMORY = 24 * 1024 * 1024

// lzma_stream on wasm32 (lzma/base.h): pointers and size_t are 4 bytes, uint64_t 8-aligned.
const STREAM_SIZE = 96
const NEXT_IN = 0
const AVAIL_IN = 4
const NEXT_OUT = 16
const AVAIL_OUT = 20
const LZMA_RUN = 0
const LZMA_FINISH = 3
const LZMA_CONCATENATED = 0x08
const LZMA_OK = 0
const LZMA_STREAM_END = 1
/** What each lzma_ret past LZMA_STREAM_END means for a decoder fed by a stranger. */
const PROBLEMS: Record<number, string> = {
  2: 'the stream has no integrity check',
  3: 'the stream uses an integrity check this decoder cannot verify',
  5: 'out of memory',
  6: `the stream needs more memory than the decoder allows (${XZ_MEMLIMIT >> 20} MiB)`,
  7: 'the input is not in the xz format',
  8: 'the stream uses unsupported options',
  9: 'the compressed data is corrupt',
  10: 'the input is truncated',
  11: 'internal error in liblzma'
}

interface LzmaModule {
  HEAPU8: Uint8Array
  HEAPU32: Uint32Array
  _malloc: (size: number) => number
  _free: (ptr: number) => void
  _lzma_stream_decoder: (stream: number, memlimit: bigint, flags: number) => number
  _lzma_code: (stream: number, action: number) => number
  _lzma_end: (stream: number) => void
}
type CreateModule = (options: { wasmBinary: Uint8Array, print: () => void, printErr: () => void }) => Promise<LzmaModule>

const require = createRequire(import.meta.url)
let loader: { create: CreateModule, wasmBinary: Uint8Array } | undefined
const pool: LzmaModule[] = []

async function instance (): Promise<LzmaModule> {
  const kept = pool.pop()
  if (kept !== undefined) return kept
  loader ??= {
    create: (await import('liblzma-wasm')).default as CreateModule,
    wasmBinary: readFileSync(require.resolve('liblzma-wasm/liblzma.wasm'))
  }
  // Emscripten's loader prints on a fault; the fault reaches the caller as an exception anyway.
  return await loader.create({ wasmBinary: loader.wasmBinary, print: () => {}, printErr: () => {} })
}

export class XzDecoder {
  readonly #m: LzmaModule
  readonly #stream: number
  readonly #in: number
  readonly #out: number
  #finishing = false
  #ended = false
  #closed = false
  #faulted = false

  private constructor (m: LzmaModule) {
    this.#m = m
    this.#stream = this.#alloc(STREAM_SIZE)
    m.HEAPU8.fill(0, this.#stream, this.#stream + STREAM_SIZE) // LZMA_STREAM_INIT
    this.#in = this.#alloc(XZ_INPUT)
    this.#out = this.#alloc(OUT_SIZE)
    const ret = m._lzma_stream_decoder(this.#stream, BigInt(XZ_MEMLIMIT), LZMA_CONCATENATED)
    if (ret !== LZMA_OK) throw this.#problem(ret)
  }

  static async open (): Promise<XzDecoder> {
    return new XzDecoder(await instance())
  }

  /** Whether every byte given was taken: `push` only then. */
  get needsInput (): boolean {
    return !this.#ended && this.#u32(AVAIL_IN) === 0
  }

  /** Whether the last stream ended (after `finish`). */
  get done (): boolean {
    return this.#ended
  }

  /** Gives the decoder up to XZ_INPUT more bytes of input; the previous input must be used up. */
  push (input: Uint8Array): void {
    if (input.length > XZ_INPUT || !this.needsInput || this.#finishing) throw new Error('xz decoder: push out of turn')
    this.#m.HEAPU8.set(input, this.#in)
    this.#setU32(NEXT_IN, this.#in)
    this.#setU32(AVAIL_IN, input.length)
  }

  /** No more input will come: the next `read`s decode what is left and check that the input ended where a stream did. */
  finish (): void {
    this.#finishing = true
  }

  /**
   * The next piece of output (at most OUT_SIZE bytes, copied out of the module), or undefined
   * when more input is needed or the input is done. Throws on bad input.
   */
  read (): Uint8Array | undefined {
    while (!this.#ended && (this.#finishing || this.#u32(AVAIL_IN) > 0)) {
      this.#setU32(NEXT_OUT, this.#out)
      this.#setU32(AVAIL_OUT, OUT_SIZE)
      let ret: number
      try {
        ret = this.#m._lzma_code(this.#stream, this.#finishing ? LZMA_FINISH : LZMA_RUN)
      } catch (err) {
        this.#faulted = true
        throw new Error(`liblzma faulted: ${(err as Error).message}`)
      }
      if (ret === LZMA_STREAM_END) this.#ended = true
      else if (ret !== LZMA_OK) throw this.#problem(ret)
      const produced = OUT_SIZE - this.#u32(AVAIL_OUT)
      // The heap may have grown during the call: HEAPU8 is read afresh.
      if (produced > 0) return this.#m.HEAPU8.slice(this.#out, this.#out + produced)
    }
    return undefined
  }

  /** Frees the decoder; its module instance is kept for another if it stayed small. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#faulted) return
    const m = this.#m
    m._lzma_end(this.#stream)
    for (const ptr of [this.#stream, this.#in, this.#out]) m._free(ptr)
    if (pool.length < POOL_SIZE && m.HEAPU8.length <= POOL_MAX_MEMORY) pool.push(m)
  }

  #alloc (size: number): number {
    const ptr = this.#m._malloc(size)
    if (ptr === 0) throw new Error('xz decoder: out of memory')
    return ptr
  }

  #u32 (offset: number): number { return this.#m.HEAPU32[(this.#stream + offset) >>> 2]! }
  #setU32 (offset: number, value: number): void { this.#m.HEAPU32[(this.#stream + offset) >>> 2] = value }

  #problem (ret: number): Error {
    return new Error(PROBLEMS[ret] ?? `liblzma returned ${ret}`)
  }
}
