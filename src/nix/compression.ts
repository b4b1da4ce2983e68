/**
 * Streaming compression and decompression for the narinfo `Compression` values that are safe
 * across Nix versions: `none`, `xz`, `zstd`, `bzip2`, `br` (Nix `src/libutil/compression.cc`; Nix
 * ≥ 2.22 decodes only the named filter, so the label must match the bytes); and decompression of
 * those Nix also writes through libarchive (archive-codecs.ts). An unknown name, and any
 * input a decoder refuses (corrupt, truncated, not that format), is a FormatError; failures of the
 * source itself pass through unchanged, and aborting kills the codec at once (child processes
 * included) and rejects with the signal's reason.
 *
 * Each codec has an in-process engine from Node or from an npm package that ships its binary, so
 * `npm ci` alone is enough; where a system binary measured faster it is preferred when on PATH.
 * Figures from `node bench/codecs.ts` (2026-12-05, 2 vCPUs, a 64 MiB NAR of /usr/lib and /usr/share
 * parts; MiB/s of uncompressed data; xz and library bzip2 compress the first 16 MiB):
 *
 *   codec  engine                               compress  decompress  ratio   4 KiB NAR c / d (ms)
 *   xz     xz 5.4 CLI -6                             1.8        41.3  0.219   47 / 28
 *   xz     lzma-native 8.0.6 -6 / liblzma-wasm       1.2        42.2  0.219   4.2 / 0.19
 *   zstd   zstd 1.5.4 CLI -3                       105.3        92.5  0.271   34 / 30
 *   zstd   node:zlib level 3                        90.8       148.2  0.271   1.0 / 0.7
 *   br     node:zlib quality 5                      33.7       125.5  0.238   0.6 / 0.3
 *   bzip2  bzip2 1.0.8 CLI -9                       11.1        22.6  0.232   25 / 25
 *   bzip2  compressjs / JS decoder                   0.4        18.1  0.269   9.1 / 5.5
 *
 * (An earlier run on another 2-core machine gave zstd 409 and br 258 MiB/s decoding in node:zlib
 * and 52 MiB/s for the xz CLI; the ratios between engines were alike.) A spawn costs 10–30 ms, so
 * `auto` picks per codec:
 * - zstd, br: node:zlib always. zlib's default 16 KiB output chunks made zstd decoding 3× slower,
 *   hence 256 KiB chunks for decoders.
 * - xz: decoded in-process by liblzma 5.8 compiled to WebAssembly (xz-decoder.ts), as fast as the
 *   CLI (the lzma-native binding it replaced, liblzma 5.2.3, decoded at 0.7× the CLI), except
 *   inputs of 1 MiB and more when the CLI is on PATH: they decode in another process, on another
 *   core, beside the event loop's work on the same NAR. Encoded by the CLI (1.5×) unless `sizeHint`
 *   is under 128 KiB, else by lzma-native on libuv's thread pool.
 * - bzip2: the CLI when present (2.5× decoding, 27× encoding), unless `sizeHint` is under 64 KiB
 *   (decode) / 16 KiB (encode). The npm fallbacks run synchronously on the calling thread, in
 *   bounded steps: correct but slow, for machines without `bzip2`.
 * Decoders ignore bytes after the end of a brotli stream (node:zlib does) and after the last zstd
 * frame; xz, bzip2 and zstd accept concatenated streams (frames), as their CLIs do.
 *
 * Decompression bombs. Compression, URL and FileSize are not covered by a narinfo's signature, so
 * any source can relabel a signed NAR as a small file that expands to gigabytes (xz reaches ~7000:1,
 * bzip2 ~10⁶:1 on zeros), and it picks the engine too (`sizeHint` comes from the size it
 * announces). Every engine is therefore pulled: it decodes only when its reader asks for the next
 * piece, and each piece is bounded, so a reader that stops at NarSize (verifyNar does) stops the
 * decoder there, one piece past it at most — and memory is bounded by design, whatever the ratio:
 * - programs (`xz`, `bzip2`): the pipe blocks the child when we do not read; the child is killed
 *   when the reader stops. `xz` gets the in-process decoder's memory limit (XZ_MEMLIMIT), so a
 *   header naming a gigabyte dictionary is refused rather than allocated.
 * - node:zlib (zstd, br): decodes on the thread pool and pauses within an input chunk as soon as
 *   its 256 KiB output is not read.
 * - xz in-process: liblzma writes at most 256 KiB a call into an output buffer of its own, and is
 *   called again only when the reader asks (xz-decoder.ts). The lzma-native stream used before
 *   decoded each input chunk to its end and queued all the output (a 300 KiB file of 2 GiB of
 *   zeros grew the process by 165 MiB).
 * - bzip2 in-process: unbzip2-stream decoded a whole block's output (up to ~46 MB from 900 kB) into
 *   a JS array at once (200 MiB of zeros from 266 bytes took 2.8 GiB and held the event loop 6.4 s);
 *   bzip2-decoder.ts decodes a block's symbols in slices and its output in 256 KiB pieces.
 * The JS bzip2 decoder runs on the event loop in steps of milliseconds and gives it a turn every
 * 10 ms, so other requests keep being answered during a bomb. `bench/decoders.ts` compares them
 * with the unbounded streams they replaced (bounded / unbounded speed, medians of 9 alternating
 * runs, 2026-12-05, quiet 2-core machine): xz 4.2 on a 4 KiB NAR, 1.45 on 64 KiB, 1.59 on 16 MiB
 * (74 against 47 MiB/s); bzip2 2.1, 3.3, 4.4. test/e2e/bombs.test.ts holds every engine to the
 * bound against a running narswarm.
 */
import { spawn } from 'node:child_process'
import { accessSync, constants as fsConstants } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, join } from 'node:path'
import type { Duplex } from 'node:stream'
import zlib from 'node:zlib'
import { setImmediate } from 'node:timers/promises'
import { raceSignal } from 'race-signal'
import { FormatError } from '../errors.ts'
import { Bzip2Decoder } from './bzip2-decoder.ts'
import { XZ_INPUT, XZ_MEMLIMIT, XzDecoder } from './xz-decoder.ts'
import { zstdFrames } from './zstd-frames.ts'
import { DECODE_ONLY, DECODE_PROGRAMS, isDecodeOnly, pickProgram, type DecodeOnly } from './archive-codecs.ts'
import type { NixHash } from './hash.ts'

export const COMPRESSIONS = ['none', 'xz', 'zstd', 'bzip2', 'br'] as const
export type Compression = (typeof COMPRESSIONS)[number]

/** File name extensions of compressed NARs, as Nix names them. */
const EXTENSION: Readonly<Record<Compression, string>> = { none: '', xz: '.xz', zstd: '.zst', bzip2: '.bz2', br: '.br' }

/** The name Nix gives a NAR file in a binary cache: `nar/<NarHash in nix32>.nar[.xz|.zst|…]`. */
export function narFileName (narHash: NixHash, compression: Compression): string {
  return `nar/${narHash.toNix32()}.nar${EXTENSION[compression]}`
}

/** `auto`: the measured best available; `library`: in-process only; `process`: the system binary. */
export type CodecEngine = 'auto' | 'library' | 'process'

export interface CodecOptions {
  signal?: AbortSignal
  /** Compression level (compress only): xz 1–9 (default 6), zstd 1–19 (3), br 0–11 (5), bzip2 1–9 (9). */
  level?: number
  engine?: CodecEngine
  /** Expected input size in bytes (e.g. a narinfo's FileSize): lets `auto` skip a spawn for small inputs. */
  sizeHint?: number
}

/** Input sizes below which a spawn costs more than the binary's speed saves (see the table). */
const BREAK_EVEN: Record<'xz' | 'bzip2', Record<'compress' | 'decompress', number>> = {
  xz: { compress: 128 * 1024, decompress: 1024 * 1024 },
  bzip2: { compress: 16 * 1024, decompress: 64 * 1024 }
}

type Source = AsyncIterable<Uint8Array>

/** The name as a supported Compression, or a FormatError listing the supported ones. */
export function checkCompression (name: string): Compression {
  if ((COMPRESSIONS as readonly string[]).includes(name)) return name as Compression
  throw new FormatError(`unsupported compression '${name}' (supported: ${COMPRESSIONS.join(', ')})`)
}

const require = createRequire(import.meta.url)
const OUT_CHUNK = 256 * 1024

interface LzmaNative {
  createStream: (coder: string, options: Record<string, unknown>) => Duplex & { cleanup?: () => void }
}
interface CompressJs { Bzip2: { compressFile: (input: Uint8Array, output: null, blockSize: number) => Uint8Array } }

const binaries = new Map<string, string | false>()
/** The absolute path of `name` on PATH, or false; looked up once per process. */
export function findBinary (name: string): string | false {
  let found = binaries.get(name)
  if (found === undefined) {
    found = false
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (dir === '') continue
      try { accessSync(join(dir, name), fsConstants.X_OK); found = join(dir, name); break } catch {}
    }
    binaries.set(name, found)
  }
  return found
}

/** The engine `auto` resolves to for this codec and direction on this machine. */
export function resolveEngine (compression: Compression, direction: 'compress' | 'decompress', engine: CodecEngine = 'auto', sizeHint?: number): 'library' | 'process' {
  if (compression === 'none' || compression === 'br') {
    if (engine === 'process') throw new Error(`${compression} has no process engine`)
    return 'library'
  }
  if (engine === 'library') return 'library'
  if (engine === 'process') {
    if (findBinary(compression) === false) throw new Error(`'${compression}' is not on PATH`)
    return 'process'
  }
  if (compression === 'zstd') return 'library'
  if (sizeHint !== undefined && sizeHint < BREAK_EVEN[compression][direction]) return 'library'
  return findBinary(compression) !== false ? 'process' : 'library'
}

function levelOf (compression: Compression, level: number | undefined): number {
  const [min, max, def] = ({ none: [0, 0, 0], xz: [1, 9, 6], zstd: [1, 19, 3], br: [0, 11, 5], bzip2: [1, 9, 9] } as const)[compression]
  const l = level ?? def
  if (!Number.isInteger(l) || l < min || l > max) throw new RangeError(`${compression} level must be an integer in ${min}..${max}, got ${l}`)
  return l
}

/**
 * Decompresses `source` as `compression` says: one of COMPRESSIONS, or one that Nix writes through
 * libarchive and narswarm only reads (archive-codecs.ts).
 */
export function decompress (compression: string, source: Source, opts: CodecOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const d = decoderOf(compression)
  switch (d.kind) {
    case 'problem': throw new FormatError(d.problem)
    case 'codec': return codec(d.compression, 'decompress', source, levelOf(d.compression, undefined), opts)
    case 'gzip': return runTransform('gzip', () => zlib.createGunzip({ chunkSize: OUT_CHUNK }), source, true, opts.signal)
    case 'program': return runProcess(d.compression, d.path, [...d.args], source, true, opts.signal)
  }
}

/**
 * Why NARs in `compression` cannot be decoded on this machine (an unknown name, or the program it
 * needs is not on PATH); undefined when they can.
 */
export function decodeProblem (compression: string): string | undefined {
  const d = decoderOf(compression)
  return d.kind === 'problem' ? d.problem : undefined
}

type Decoder =
  | { kind: 'codec', compression: Compression }
  | { kind: 'gzip' }
  | { kind: 'program', compression: DecodeOnly, path: string, args: readonly string[] }
  | { kind: 'problem', problem: string }

/** How `compression` decodes on this machine, or why it cannot. */
function decoderOf (compression: string): Decoder {
  if ((COMPRESSIONS as readonly string[]).includes(compression)) return { kind: 'codec', compression: compression as Compression }
  if (!isDecodeOnly(compression)) return { kind: 'problem', problem: `unsupported compression '${compression}' (supported: ${[...COMPRESSIONS, ...DECODE_ONLY].join(', ')})` }
  if (compression === 'gzip') return { kind: 'gzip' }
  const picked = pickProgram(compression, DECODE_PROGRAMS[compression], findBinary)
  return 'problem' in picked ? { kind: 'problem', problem: picked.problem } : { kind: 'program', compression, ...picked }
}

/** Compresses `source` into the format `compression` names. */
export function compress (compression: string, source: Source, opts: CodecOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const c = checkCompression(compression)
  return codec(c, 'compress', source, levelOf(c, opts.level), opts)
}

async function * codec (c: Compression, direction: 'compress' | 'decompress', source: Source, level: number, opts: CodecOptions): AsyncGenerator<Uint8Array, void, undefined> {
  if (c === 'none') {
    yield * abortable(source, opts.signal)
    return
  }
  const engine = resolveEngine(c, direction, opts.engine, opts.sizeHint)
  const unpack = direction === 'decompress'
  if (engine === 'process') {
    const bin = findBinary(c) as string
    const limit = c === 'xz' && unpack ? [`--memlimit-decompress=${XZ_MEMLIMIT}`] : []
    yield * runProcess(c, bin, unpack ? ['-dcq', ...limit] : ['-cq', `-${level}`], source, unpack, opts.signal)
  } else if (c === 'bzip2') {
    yield * (unpack ? bunzipLibrary(source, opts.signal) : bzipLibrary(abortable(source, opts.signal), level))
  } else if (c === 'xz' && unpack) {
    yield * unxzLibrary(source, opts.signal)
  } else if (c === 'zstd' && unpack) {
    yield * unzstdLibrary(source, opts.signal)
  } else {
    yield * runTransform(c, () => libraryStream(c, unpack, level), source, unpack, opts.signal)
  }
}

function libraryStream (c: 'xz' | 'zstd' | 'br', unpack: boolean, level: number): Duplex & { cleanup?: () => void } {
  switch (c) {
    // zlib's default 16 KiB output chunks cost 3× in decompression speed (measured: zstd 163 MiB/s
    // at 16 KiB, 527 at 256 KiB), so decoders get larger ones.
    case 'zstd':
      return unpack
        ? zlib.createZstdDecompress({ chunkSize: OUT_CHUNK })
        // The content checksum makes a corrupted frame an error, as with the zstd CLI's output.
        : zlib.createZstdCompress({ chunkSize: 64 * 1024, params: { [zlib.constants.ZSTD_c_compressionLevel]: level, [zlib.constants.ZSTD_c_checksumFlag]: 1 } })
    case 'br':
      return unpack
        ? zlib.createBrotliDecompress({ chunkSize: OUT_CHUNK })
        : zlib.createBrotliCompress({ chunkSize: 64 * 1024, params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level } })
    case 'xz': {
      // Decoding goes through unxzLibrary. Check 4 is CRC64, what Nix's own xz sink writes.
      const lzma = require('lzma-native') as LzmaNative
      return lzma.createStream('easyEncoder', { preset: level, check: 4 })
    }
  }
}

/**
 * `source`, but a pending read rejects as soon as `signal` aborts, even if the source is stuck.
 * Each read gets its own abort race: racing every read against one long-lived promise would keep
 * every chunk reachable until the stream ends (nodejs/node#17469), so memory would grow with the
 * NAR's size.
 */
async function * abortable (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  signal?.throwIfAborted()
  if (signal === undefined) { yield * source; return }
  const it = source[Symbol.asyncIterator]()
  let finished = false
  try {
    for (;;) {
      signal.throwIfAborted()
      const r = await raceSignal(it.next(), signal)
      if (r.done === true) { finished = true; return }
      yield r.value
    }
  } finally {
    // Not awaited: a stuck source would never answer.
    if (!finished) it.return?.()?.catch(() => {})
  }
}

/** The error to surface: the source's own, the abort reason, or a FormatError for refused input. */
function classify (err: unknown, c: Compression | DecodeOnly, unpack: boolean, sourceFailure: { error?: unknown }, signal?: AbortSignal): unknown {
  if ('error' in sourceFailure) return sourceFailure.error
  if (signal?.aborted === true) return signal.reason
  const message = err instanceof Error ? err.message : String(err)
  return unpack
    ? new FormatError(`${c}: corrupt or truncated input: ${message}`, { cause: err })
    : new Error(`${c} compression failed: ${message}`, { cause: err })
}

/**
 * Writes `source` into `sink` with backpressure. Returns a record that gets `error` if the source
 * itself failed; a sink that stops accepting (a child that exited) just ends the feeding.
 */
function feed (source: Source, sink: NodeJS.WritableStream & { destroyed?: boolean, writableEnded?: boolean }, onSourceError: (err: unknown) => void): { error?: unknown, stop: () => void } {
  const state: { error?: unknown, stop: () => void } = { stop: () => {} }
  const it = source[Symbol.asyncIterator]()
  let stopped = false
  state.stop = () => {
    if (stopped) return
    stopped = true
    it.return?.()?.catch(() => {})
  }
  void (async () => {
    for (;;) {
      let r: IteratorResult<Uint8Array>
      try { r = await it.next() } catch (err) { stopped = true; state.error = err; onSourceError(err); return }
      if (stopped || sink.destroyed === true) { state.stop(); return }
      if (r.done === true) { stopped = true; sink.end(); return }
      if (r.value.length === 0) continue
      if (!sink.write(r.value)) {
        const ok = await new Promise<boolean>(resolve => {
          const done = (v: boolean) => () => { sink.off('drain', onDrain); sink.off('close', onClose); sink.off('error', onClose); resolve(v) }
          const onDrain = done(true)
          const onClose = done(false)
          sink.once('drain', onDrain); sink.once('close', onClose); sink.once('error', onClose)
        })
        if (!ok) { state.stop(); return }
      }
    }
  })()
  return state
}

async function * runTransform (c: Compression | DecodeOnly, make: () => Duplex & { cleanup?: () => void }, source: Source, unpack: boolean, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  signal?.throwIfAborted()
  const t = make()
  const onAbort = (): void => { t.destroy(signal?.reason) }
  signal?.addEventListener('abort', onAbort, { once: true })
  const fed = feed(source, t, err => t.destroy(err as Error))
  try {
    for await (const chunk of t) yield chunk as Uint8Array
    signal?.throwIfAborted()
  } catch (err) {
    throw classify(err, c, unpack, fed, signal)
  } finally {
    signal?.removeEventListener('abort', onAbort)
    fed.stop()
    t.destroy()
  }
}

async function * runProcess (c: Compression | DecodeOnly, bin: string, args: string[], source: Source, unpack: boolean, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  signal?.throwIfAborted()
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = new Promise<{ code: number | null, sig: string | null, spawnError?: Error }>(resolve => {
    child.once('error', spawnError => resolve({ code: null, sig: null, spawnError }))
    child.once('close', (code, sig) => resolve({ code, sig }))
  })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (s: string) => { if (stderr.length < 2000) stderr += s })
  // A child that exits early (corrupt input) breaks the pipe: its exit status says why.
  child.stdin.on('error', () => {})
  const kill = (): void => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') }
  const onAbort = (): void => { kill(); child.stdout.destroy() }
  signal?.addEventListener('abort', onAbort, { once: true })
  const fed = feed(source, child.stdin, kill)
  let failure: unknown
  try {
    try {
      for await (const chunk of child.stdout) yield chunk as Uint8Array
    } catch (err) {
      failure = err
    }
    const { code, sig, spawnError } = await exited
    if (spawnError !== undefined) failure ??= spawnError
    else if (code !== 0) failure ??= new Error(`${bin} ${args.join(' ')} exited with ${code ?? sig}: ${stderr.trim()}`)
    signal?.throwIfAborted()
    if (failure !== undefined) throw classify(failure, c, unpack, fed, signal)
  } finally {
    signal?.removeEventListener('abort', onAbort)
    fed.stop()
    kill()
    child.stdout.destroy()
    await exited
  }
}

/** A failure of an in-process decoder on its input, as a FormatError. */
function corrupt (c: Compression, err: unknown): FormatError {
  return new FormatError(`${c}: corrupt or truncated input: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}

/**
 * zstd decoding in-process, one frame at a time: node:zlib's decoder stops at the end of the first
 * frame, where the zstd program and Nix (libarchive) go on to the next, as a stream made by
 * `pzstd`, or by narswarm for Nix (zstd-frames.ts), has many.
 */
async function * unzstdLibrary (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  let frames = 0
  for await (const frame of zstdFrames(abortable(source, signal))) {
    frames++
    yield * runTransform('zstd', () => libraryStream('zstd', true, 0), frame, true, signal)
  }
  if (frames === 0) throw corrupt('zstd', new Error('the input does not start with a zstd frame'))
}

/**
 * Gives the event loop a turn once a decoder has held it for TURN_MS: the in-process decoders
 * below run synchronously in bounded steps, and a consumer that never waits on I/O (a verifying
 * spool into the store) would otherwise chain those steps without letting a request in.
 */
const TURN_MS = 10
function turns (): () => Promise<void> {
  let since = performance.now()
  return async () => {
    if (performance.now() - since < TURN_MS) return
    await setImmediate()
    since = performance.now()
  }
}

/** xz decoding in-process, in pieces of at most OUT_CHUNK bytes (see xz-decoder.ts). */
async function * unxzLibrary (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  // A decoder that cannot be made is this process's fault, not the input's: not a FormatError.
  const d = await XzDecoder.open()
  const turn = turns()
  const drain = async function * (): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      let out: Uint8Array | undefined
      try { out = d.read() } catch (err) { throw corrupt('xz', err) }
      if (out === undefined) return
      yield out
      await turn()
      signal?.throwIfAborted()
    }
  }
  try {
    for await (const chunk of abortable(source, signal)) {
      for (let i = 0; i < chunk.length; i += XZ_INPUT) {
        d.push(chunk.subarray(i, i + XZ_INPUT))
        yield * drain()
      }
    }
    d.finish()
    yield * drain()
  } finally {
    d.close()
  }
}

/** bzip2 decoding in-process, in pieces of at most OUT_CHUNK bytes (see bzip2-decoder.ts). */
async function * bunzipLibrary (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  const d = new Bzip2Decoder()
  const turn = turns()
  let out = new Uint8Array(OUT_CHUNK)
  const drain = async function * (): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      let n: number
      try { n = d.read(out) } catch (err) { throw corrupt('bzip2', err) }
      if (n > 0) {
        // A small piece is copied, so that a held chunk does not pin a whole buffer.
        yield n < OUT_CHUNK / 4 ? out.slice(0, n) : out.subarray(0, n)
        if (n >= OUT_CHUNK / 4) out = new Uint8Array(OUT_CHUNK)
      } else if (d.needsInput || d.done) {
        return
      }
      await turn()
      signal?.throwIfAborted()
    }
  }
  for await (const chunk of abortable(source, signal)) {
    d.push(chunk)
    yield * drain()
  }
  d.end()
  yield * drain()
  if (!d.done) throw corrupt('bzip2', new Error('no end of stream'))
}

/**
 * bzip2 encoding in-process with compressjs, which only compresses whole buffers: the input is cut
 * into pieces of one bzip2 block each, every piece becoming its own bzip2 stream. Concatenated
 * streams are valid bzip2 (`bzip2 -d` and libarchive read them all).
 */
async function * bzipLibrary (source: Source, level: number): AsyncGenerator<Uint8Array, void, undefined> {
  const { Bzip2 } = require('compressjs') as CompressJs
  // Slightly under one block, since compressjs's RLE pre-pass may grow some inputs.
  const piece = level * 100_000 - 1000
  let pending: Uint8Array[] = []
  let size = 0
  let any = false
  const flush = (): Uint8Array => {
    const whole = Buffer.concat(pending, size)
    pending = []
    size = 0
    any = true
    return Bzip2.compressFile(whole, null, level)
  }
  for await (const chunk of source) {
    let c = chunk
    while (c.length > 0) {
      const take = Math.min(piece - size, c.length)
      pending.push(c.subarray(0, take))
      size += take
      c = c.subarray(take)
      if (size === piece) yield flush()
    }
  }
  if (size > 0 || !any) yield flush()
}
