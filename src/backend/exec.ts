/**
 * The `exec` backend: any program that can fetch a NAR, e.g. `exec:///usr/bin/fetcher?timeout=30s`.
 * For each `open` it runs the program with the locator's URL as its last argument and streams
 * what the program writes to stdout. The contract (docs/backends.md):
 *
 * - exit 0 after writing the bytes to stdout: those are the NAR's bytes, in the compression named
 *   by the locator URL's `compression` query option, else the spec's `compression` option, else
 *   the locator's own `compression`;
 * - exit 3 without output: the program says the bytes are not there (`open` resolves undefined);
 * - any other exit, or 3 after some output, or silence for longer than `timeout` (before the first
 *   byte or between two): a failure, thrown as UpstreamError carrying the last line of stderr.
 *
 * The program runs in its own process group, so that whatever it starts dies with it: aborting
 * the signal, or stopping to read the body, kills the whole group at once. At most
 * `max-processes` programs run at a time; further opens wait for a slot.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { ConfigError, UpstreamError } from '../errors.ts'
import type { Compression } from '../nix/compression.ts'
import type { AbortOptions, Backend, BackendPlugin, Components, Locator, NarSource } from '../types.ts'
import { compression as parseCompression, duration, integer, relativePathError, specPath } from '../util/values.ts'

export interface ExecBackendInit {
  /** Absolute path of the program. */
  program: string
  /** Arguments placed before the locator URL. */
  args: string[]
  /** Milliseconds the program may stay silent, before its first byte and between two. */
  timeout: number
  /** Compression of what the program writes, when it always writes the same. */
  compression?: Compression
  /** Locator schemes routed to this program. */
  schemes: string[]
  maxProcesses: number
}

/** The exit code with which a program says "not there". */
export const EXIT_ABSENT = 3

export const EXEC_DEFAULTS = { timeout: 30_000, schemes: ['exec'], maxProcesses: 16 } as const

export class ExecBackend implements Backend {
  readonly name: string
  readonly schemes: readonly string[]
  readonly #init: ExecBackendInit
  readonly #slots: Slots
  readonly #running = new Set<ChildProcess>()
  #closed = false

  constructor (init: ExecBackendInit) {
    this.#init = init
    this.name = `exec://${init.program}`
    this.schemes = init.schemes
    this.#slots = new Slots(init.maxProcesses)
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const signal = options.signal
    signal?.throwIfAborted()
    if (this.#closed) throw new UpstreamError(this.name, 'the backend is closed')
    await this.#slots.acquire(signal)
    const run = new Run(this, this.#init, locator.url, signal, () => this.#slots.release(), this.#running)
    let first: IteratorResult<Uint8Array>
    try {
      first = await run.next()
    } catch (err) {
      await run.stop()
      throw err
    }
    if (first.done === true) {
      const status = await run.finish()
      if (status === 'absent') return undefined
      return { body: (async function * () {})(), compression: this.#compressionOf(locator), fileSize: 0 }
    }
    return { body: run.body(first.value), compression: this.#compressionOf(locator) }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const child of this.#running) killGroup(child)
  }

  #compressionOf (locator: Locator): string {
    let fromUrl: string | null = null
    try { fromUrl = new URL(locator.url).searchParams.get('compression') } catch {}
    return fromUrl ?? this.#init.compression ?? locator.compression
  }
}

/** One run of the program for one open. */
class Run {
  readonly #backend: ExecBackend
  readonly #init: ExecBackendInit
  readonly #child: ChildProcess
  readonly #exited: Promise<{ code: number | null, signal: string | null, error?: Error }>
  readonly #stdout: AsyncIterator<Uint8Array>
  readonly #signal: AbortSignal | undefined
  readonly #onAbort: () => void
  readonly #release: () => void
  readonly #running: Set<ChildProcess>
  #stderr = ''
  #timer: NodeJS.Timeout | undefined
  #timedOut = false
  #stopped = false

  constructor (backend: ExecBackend, init: ExecBackendInit, url: string, signal: AbortSignal | undefined, release: () => void, running: Set<ChildProcess>) {
    this.#backend = backend
    this.#init = init
    this.#signal = signal
    this.#release = release
    this.#running = running
    // Its own process group (detached), so that killing it also kills what it started.
    this.#child = spawn(init.program, [...init.args, url], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    running.add(this.#child)
    this.#exited = new Promise(resolve => {
      this.#child.once('error', error => resolve({ code: null, signal: null, error }))
      this.#child.once('exit', (code, sig) => resolve({ code, signal: sig }))
    })
    void this.#exited.then(() => running.delete(this.#child))
    this.#child.stderr!.setEncoding('utf8')
    this.#child.stderr!.on('data', (s: string) => { this.#stderr = (this.#stderr + s).slice(-4096) })
    this.#stdout = this.#child.stdout![Symbol.asyncIterator]()
    this.#onAbort = () => { killGroup(this.#child); this.#child.stdout!.destroy() }
    signal?.addEventListener('abort', this.#onAbort, { once: true })
    this.#arm()
  }

  /** The next piece of stdout, with the silence timer re-armed after it. */
  async next (): Promise<IteratorResult<Uint8Array>> {
    try {
      const r = await this.#stdout.next()
      this.#arm()
      return r
    } catch (err) {
      this.#signal?.throwIfAborted()
      throw this.#failure(`reading its output failed: ${(err as Error).message}`)
    }
  }

  /** Waits for the exit after stdout ended: 'ok', 'absent', or a thrown UpstreamError. */
  async finish (allowAbsent = true): Promise<'ok' | 'absent'> {
    const { code, signal, error } = await this.#exited
    this.#cleanup()
    this.#signal?.throwIfAborted()
    if (this.#timedOut) throw this.#failure(`was silent for longer than ${this.#init.timeout} ms`, true)
    if (error !== undefined) throw this.#failure(`could not be started: ${error.message}`)
    if (code === 0) return 'ok'
    if (code === EXIT_ABSENT && allowAbsent) return 'absent'
    throw this.#failure(`exited with ${code ?? signal}`)
  }

  /** Kills the program (if still running) and frees its slot. */
  async stop (): Promise<void> {
    if (this.#stopped) return
    killGroup(this.#child)
    this.#child.stdout!.destroy()
    await this.#exited
    this.#cleanup()
  }

  /**
   * The body, starting with `first`. An iterator object rather than a bare generator: a generator
   * that was never started skips its `finally` on `return()`, which would leave the program running.
   */
  body (first: Uint8Array): AsyncIterable<Uint8Array> {
    const run = async function * (self: Run): AsyncGenerator<Uint8Array> {
      try {
        yield first
        for (;;) {
          const r = await self.next()
          if (r.done === true) break
          yield r.value
        }
        await self.finish(false)
      } finally {
        if (!self.#stopped) await self.stop()
      }
    }
    const gen = run(this)
    return {
      [Symbol.asyncIterator]: () => ({
        next: async () => await gen.next(),
        return: async () => { await this.stop(); return await gen.return(undefined) },
        throw: async (err: unknown) => { await this.stop(); return await gen.throw(err) }
      })
    }
  }

  /** (Re)starts the silence timer: called for every chunk, so it is refreshed, not made anew. */
  #arm (): void {
    if (this.#stopped) return
    if (this.#timer !== undefined) { this.#timer.refresh(); return }
    this.#timer = setTimeout(() => {
      this.#timedOut = true
      killGroup(this.#child)
    }, this.#init.timeout)
    // A source nobody reads must not keep the process alive.
    this.#timer.unref()
  }

  #cleanup (): void {
    if (this.#stopped) return
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#running.delete(this.#child)
    this.#release()
  }

  #failure (what: string, timeout = false): UpstreamError {
    const line = this.#stderr.split('\n').map(l => l.trim()).filter(Boolean).pop()
    return new UpstreamError(this.#backend.name, `${what}${line !== undefined ? `: ${line}` : ''}`, { timeout })
  }
}

function killGroup (child: ChildProcess): void {
  if (child.pid === undefined) return
  try { process.kill(-child.pid, 'SIGKILL') } catch {}
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

/** A counting semaphore for program runs; waiting is abortable. */
class Slots {
  #free: number
  readonly #waiting: Array<() => void> = []

  constructor (size: number) { this.#free = size }

  async acquire (signal?: AbortSignal): Promise<void> {
    if (this.#free > 0) { this.#free--; return }
    await new Promise<void>((resolve, reject) => {
      const grant = (): void => { signal?.removeEventListener('abort', onAbort); resolve() }
      const onAbort = (): void => {
        const i = this.#waiting.indexOf(grant)
        if (i >= 0) this.#waiting.splice(i, 1)
        reject(signal!.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiting.push(grant)
    })
  }

  release (): void {
    const next = this.#waiting.shift()
    if (next !== undefined) next()
    else this.#free++
  }
}

const OPTIONS = ['timeout', 'compression', 'arg', 'scheme', 'max-processes'] as const

function parse (spec: URL): ExecBackendInit {
  const where = 'exec backend'
  if (spec.protocol !== 'exec:') throw new ConfigError(`${where}: expected 'exec:///absolute/path/to/program', got '${spec.protocol}'`)
  if (spec.host !== '') {
    throw new ConfigError(`${where}: the program must be an absolute path (exec:///usr/bin/fetcher), got '${spec.host}${spec.pathname}'`)
  }
  if (!spec.pathname.startsWith('/')) throw relativePathError(`${where}: the program must be an absolute path`, spec, spec.pathname)
  if (spec.hash !== '') throw new ConfigError(`${where}: a fragment ('${spec.hash}') is not allowed`)
  const program = specPath(where, spec)
  if (program.endsWith('/')) throw new ConfigError(`${where}: '${program}' names a directory, not a program`)
  for (const key of spec.searchParams.keys()) {
    if (!(OPTIONS as readonly string[]).includes(key)) throw new ConfigError(`${where}: unknown option '${key}' (known: ${OPTIONS.join(', ')})`)
  }
  const q = spec.searchParams
  const init: ExecBackendInit = {
    program,
    args: q.getAll('arg'),
    timeout: duration(q.get('timeout') ?? undefined, EXEC_DEFAULTS.timeout, `${where}: timeout`),
    schemes: q.has('scheme') ? q.getAll('scheme') : [...EXEC_DEFAULTS.schemes],
    maxProcesses: integer(q.get('max-processes') ?? undefined, EXEC_DEFAULTS.maxProcesses, `${where}: max-processes`)
  }
  if (init.timeout <= 0) throw new ConfigError(`${where}: timeout must be more than 0`)
  if (init.maxProcesses < 1) throw new ConfigError(`${where}: max-processes must be at least 1, got ${init.maxProcesses}`)
  for (const s of init.schemes) {
    if (!/^[a-z][a-z0-9.-]*$/.test(s)) throw new ConfigError(`${where}: '${s}' is not a URL scheme`)
  }
  const compression = q.get('compression')
  // Unset means: the locator's own compression (see the module comment).
  if (compression !== null) init.compression = parseCompression(compression, 'none', where)
  return init
}

export const plugin: BackendPlugin<ExecBackendInit> = {
  scheme: 'exec',
  summary: 'runs a program per NAR (exec:///usr/bin/fetcher?timeout=30s): locator URL in, bytes on stdout, exit 3 = absent',
  parse,
  create: async (init: ExecBackendInit, _components: Components) => new ExecBackend(init)
}
