/**
 * A mapper that is a program of the operator's choosing: `exec:///usr/local/bin/my-mapper?timeout=5s`
 * (`arg=` repeated gives it arguments). narswarm starts it once and keeps it running, and speaks
 * line-delimited JSON with it over stdin/stdout (protocol in docs/index-formats.md): a `hello`
 * names the operations the program supports, then `lookup`, `narinfo` and `record` requests carry
 * an `id` that the answer repeats, so answers may come in any order. stderr goes to the log.
 *
 * A program that exits is started again on the next request, after a back-off that doubles with
 * each failure in a row (so a crashing program is not restarted in a tight loop). A program that
 * does not answer a request within the timeout is presumed stuck and restarted the same way. A
 * request whose program died, hung or spoke garbage rejects with UpstreamError, never with `[]`:
 * a broken index is not an empty one.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { raceSignal } from 'race-signal'
import { ConfigError, FormatError, UpstreamError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { NixHash } from '../nix/hash.ts'
import { isHashPart } from '../nix/store-path.ts'
import type { AbortOptions, Locator, Mapper, MapperPlugin } from '../types.ts'
import { localPath, mapperSpec, parseLocator, parseLocators, parseRecordedNarInfo, timeoutOption } from './common.ts'

export interface ExecMapperInit {
  name: string
  /** Absolute path of the program. */
  program: string
  args: string[]
  /** Milliseconds the program has to answer one request. */
  timeout: number
}

const EXEC_PROTOCOL_VERSION = 1
const MAX_LINE = 16 * 1024 * 1024
const FIRST_BACKOFF = 100
const MAX_BACKOFF = 30_000
/** How long the program has to exit after its stdin closes, and after SIGTERM. */
const EXIT_GRACE = 2_000

type Answer = Record<string, unknown>

interface Pending {
  run: Run
  op: string
  resolve: (answer: Answer) => void
  reject: (err: Error) => void
}

/**
 * Calls `onLine` for each line a stream writes; a line longer than `max` characters is dropped and
 * reported through `onOverflow`.
 */
function onLines (stream: NodeJS.ReadableStream, max: number, onLine: (line: string) => void, onOverflow: () => void): void {
  let buffered = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    buffered += chunk
    let start = 0
    let nl: number
    while ((nl = buffered.indexOf('\n', start)) >= 0) {
      onLine(buffered.slice(start, nl))
      start = nl + 1
    }
    buffered = buffered.slice(start)
    if (buffered.length > max) {
      buffered = ''
      onOverflow()
    }
  })
}

/** One running instance of the program. */
class Run {
  readonly child: ChildProcessWithoutNullStreams
  /** Why narswarm ended this run, if it did: becomes the error of its unanswered requests. */
  killedBecause: string | undefined
  exited = false
  readonly exit: Promise<void>

  constructor (init: ExecMapperInit, log: Logger, onLine: (run: Run, line: string) => void, onExit: (run: Run, how: string) => void) {
    this.child = spawn(init.program, init.args, { stdio: ['pipe', 'pipe', 'pipe'] })
    // Writing to a program that just died fails with EPIPE; its exit is handled below.
    this.child.stdin.on('error', () => {})
    onLines(this.child.stdout, MAX_LINE, line => { if (line.trim() !== '') onLine(this, line) }, () => this.kill(`wrote a line longer than ${MAX_LINE} bytes`))
    onLines(this.child.stderr, 1000, line => log.warn({ stderr: line.slice(0, 1000) }, 'mapper program says'), () => {})
    this.exit = new Promise(resolve => {
      const done = (how: string): void => {
        if (this.exited) return
        this.exited = true
        onExit(this, how)
        resolve()
      }
      this.child.once('error', err => done(`could not be run: ${err.message}`))
      this.child.once('close', (code, signal) => done(signal !== null ? `was killed by ${signal}` : `exited with status ${code}`))
    })
  }

  send (message: Answer): void {
    this.child.stdin.write(`${JSON.stringify(message)}\n`)
  }

  kill (reason: string): void {
    if (this.exited || this.killedBecause !== undefined) return
    this.killedBecause = reason
    this.terminate()
  }

  /** SIGTERM, then SIGKILL if the program has not exited within EXIT_GRACE. */
  terminate (): void {
    this.child.kill('SIGTERM')
    setTimeout(() => { if (!this.exited) this.child.kill('SIGKILL') }, EXIT_GRACE).unref()
  }
}

export class ExecMapper implements Mapper {
  readonly name: string
  /** Present when the program's hello lists `narinfo`. */
  narInfo?: (hashPart: string, options?: AbortOptions) => Promise<string | undefined>
  /** Present when the program's hello lists `record`. */
  record?: (narHash: NixHash, locator: Locator, options?: AbortOptions & { narInfo?: string }) => Promise<void>
  readonly #init: ExecMapperInit
  readonly #log: Logger
  readonly #pending = new Map<number, Pending>()
  #nextId = 1
  #current: Run | undefined
  #starting: Promise<Run> | undefined
  /** The operations the program named in its first hello; they decide which methods exist. */
  #ops: ReadonlySet<string> | undefined
  /** Failures in a row (exits, hangs); reset by an answer. */
  #failures = 0
  #notBefore = 0
  #closing: Promise<void> | undefined

  private constructor (init: ExecMapperInit, log: Logger) {
    this.name = init.name
    this.#init = init
    this.#log = log
  }

  /** Starts the program and asks what it can do; UpstreamError when it cannot be started or greeted. */
  static async start (init: ExecMapperInit, log: Logger): Promise<ExecMapper> {
    const mapper = new ExecMapper(init, log)
    try {
      await mapper.#running(undefined)
    } catch (err) {
      await mapper.close()
      throw err
    }
    const ops = mapper.#ops ?? new Set()
    if (ops.has('narinfo')) mapper.narInfo = async (hashPart, options) => await mapper.#narInfo(hashPart, options)
    if (ops.has('record')) mapper.record = async (narHash, locator, options) => { await mapper.#record(narHash, locator, options) }
    return mapper
  }

  async lookup (key: NixHash, options?: AbortOptions): Promise<Locator[]> {
    const answer = await this.#request({ op: 'lookup', key: key.toString() }, options?.signal)
    return parseLocators(answer.locators, `mapper ${this.name}, lookup ${key.toString()}`)
  }

  async #narInfo (hashPart: string, options?: AbortOptions): Promise<string | undefined> {
    // A program may use the hash part as a file name: only real ones are passed on.
    if (!isHashPart(hashPart)) return undefined
    const answer = await this.#request({ op: 'narinfo', hashPart }, options?.signal)
    if (answer.narInfo === undefined || answer.narInfo === null) return undefined
    if (typeof answer.narInfo !== 'string') throw new FormatError(`mapper ${this.name}: 'narInfo' of ${hashPart} must be a string or null`)
    return answer.narInfo
  }

  async #record (narHash: NixHash, locator: Locator, options?: AbortOptions & { narInfo?: string }): Promise<void> {
    const checked = parseLocator(locator, 'locator to record')
    if (options?.narInfo !== undefined) parseRecordedNarInfo(options.narInfo, narHash)
    const message: Answer = { op: 'record', narHash: narHash.toString(), locator: checked }
    if (options?.narInfo !== undefined) message.narInfo = options.narInfo
    await this.#request(message, options?.signal)
  }

  async close (): Promise<void> {
    this.#closing ??= (async () => {
      const run = this.#current ?? await this.#starting?.catch(() => undefined)
      this.#current = undefined
      if (run === undefined || run.exited) return
      // EOF on stdin is the polite way to ask the program to finish; signals only if it does not.
      run.killedBecause = 'narswarm closed the mapper'
      run.child.stdin.end()
      const timer = setTimeout(() => run.terminate(), EXIT_GRACE)
      await run.exit
      clearTimeout(timer)
    })()
    await this.#closing
  }

  /** Sends one request and returns the answer, which has no `error`. */
  async #request (message: Answer, signal: AbortSignal | undefined): Promise<Answer> {
    signal?.throwIfAborted()
    if (this.#closing !== undefined) throw new UpstreamError(this.name, 'mapper is closed')
    const run = await this.#running(signal)
    const answer = await this.#exchange(run, message, signal)
    if (answer.error !== undefined) {
      throw new UpstreamError(this.name, `${String(message.op)} failed: ${typeof answer.error === 'string' ? answer.error : JSON.stringify(answer.error)}`)
    }
    return answer
  }

  #exchange (run: Run, message: Answer, signal: AbortSignal | undefined): Promise<Answer> {
    const id = this.#nextId++
    const op = String(message.op)
    // The program may have died between being chosen and being written to; its exit has passed.
    if (run.exited) return Promise.reject(new UpstreamError(this.name, `the program ${run.killedBecause ?? 'exited'} before ${op} was sent`))
    return new Promise<Answer>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        this.#pending.delete(id)
      }
      const onAbort = (): void => { settle(); reject(signal!.reason) }
      const timer = setTimeout(() => {
        settle()
        reject(new UpstreamError(this.name, `the program did not answer ${op} within ${this.#init.timeout} ms`, { timeout: true }))
        this.#log.error({ ms: this.#init.timeout, op }, 'mapper program did not answer in time; presuming it stuck and restarting it')
        run.kill(`was restarted after not answering ${op} within ${this.#init.timeout} ms`)
      }, this.#init.timeout)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#pending.set(id, {
        run,
        op,
        resolve: answer => { settle(); this.#failures = 0; resolve(answer) },
        reject: err => { settle(); reject(err) }
      })
      run.send({ id, ...message })
    })
  }

  /** The running program, started (after any back-off) and greeted if need be. */
  async #running (signal: AbortSignal | undefined): Promise<Run> {
    if (this.#current !== undefined && !this.#current.exited && this.#current.killedBecause === undefined) return this.#current
    this.#starting ??= this.#start().finally(() => { this.#starting = undefined })
    return await raceSignal(this.#starting, signal)
  }

  async #start (): Promise<Run> {
    const wait = this.#notBefore - Date.now()
    if (wait > this.#init.timeout) {
      throw new UpstreamError(this.name, `the program failed ${this.#failures} times in a row; next start in ${Math.ceil(wait / 1000)} s`)
    }
    if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
    if (this.#closing !== undefined) throw new UpstreamError(this.name, 'mapper is closed')
    const run = new Run(this.#init, this.#log, (r, line) => this.#onLine(r, line), (r, how) => this.#onExit(r, how))
    const hello = await this.#exchange(run, { op: 'hello', version: EXEC_PROTOCOL_VERSION }, undefined)
    if (hello.version !== EXEC_PROTOCOL_VERSION || !Array.isArray(hello.ops) || !hello.ops.every(o => typeof o === 'string')) {
      run.kill('answered hello without version 1 and a list of ops')
      throw new UpstreamError(this.name, `the program's hello answer ${JSON.stringify(hello).slice(0, 200)} lacks "version":1 and "ops"`)
    }
    const ops = new Set(hello.ops as string[])
    if (this.#ops !== undefined && [...this.#ops].some(o => !ops.has(o))) {
      this.#log.warn({ ops: [...ops] }, 'mapper program offers fewer operations than when narswarm started; those requests will fail')
    }
    this.#ops ??= ops
    this.#current = run
    this.#log.debug({ pid: run.child.pid }, 'mapper program started')
    return run
  }

  #onLine (run: Run, line: string): void {
    let answer: unknown
    try { answer = JSON.parse(line) } catch { answer = undefined }
    if (typeof answer !== 'object' || answer === null || Array.isArray(answer) || !Number.isSafeInteger((answer as Answer).id)) {
      // Without an id the answer cannot be matched to a request, so the stream can no longer be trusted.
      this.#log.error({ line: line.slice(0, 200) }, 'mapper program wrote something that is not a JSON answer with an id; restarting it')
      run.kill('wrote something that is not a JSON answer with an id')
      return
    }
    const pending = this.#pending.get((answer as Answer).id as number)
    // An answer nobody waits for any more (timed out, aborted) is dropped.
    if (pending === undefined || pending.run !== run) return
    pending.resolve(answer as Answer)
  }

  #onExit (run: Run, how: string): void {
    if (this.#current === run) this.#current = undefined
    const why = run.killedBecause ?? how
    for (const pending of [...this.#pending.values()]) {
      if (pending.run === run) pending.reject(new UpstreamError(this.name, `the program ${why} before answering ${pending.op}`))
    }
    if (this.#closing !== undefined) return
    this.#failures++
    const backoff = Math.min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (this.#failures - 1))
    this.#notBefore = Date.now() + backoff
    this.#log.error({ how: why, failures: this.#failures, restartInMs: backoff }, `mapper program ${why}; it is started again on the next request, not before ${backoff} ms`)
  }
}

const OPTIONS = ['timeout', 'arg'] as const

export const plugin: MapperPlugin<ExecMapperInit> = {
  scheme: 'exec',
  summary: 'a long-running program that answers lookups as JSON lines (exec:///usr/local/bin/my-mapper?timeout=5s)',
  parse (spec) {
    const { name, what } = mapperSpec(spec, ['exec:'], OPTIONS, 'an exec: spec')
    const program = localPath(spec, what, false)!
    const timeout = timeoutOption(spec, what, 10_000)
    const args = spec.searchParams.getAll('arg')
    if (args.some(a => a.includes('\0'))) throw new ConfigError(`${what}: option 'arg' contains a NUL byte`)
    return { name, program, args, timeout }
  },
  async create (init, components) {
    return await ExecMapper.start(init, components.log.child({ mapper: init.name }))
  }
}
