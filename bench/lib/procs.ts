/**
 * Child processes and temporary directories of one bench run, all registered here so that every
 * one of them is stopped and removed at the end — on success, on an error, on Ctrl-C and on
 * `process.exit`. Also: CPU pinning with `taskset` (servers on one core, clients on the other),
 * free ports, and waiting for an HTTP server to answer.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const HAS_TASKSET = spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0

/** CPU the servers (narswarm, nginx, the sha256 child) run on, and the one the clients (wrk, curl) run on. */
export const SERVER_CPU = 0
export const CLIENT_CPU = 1
/** `BENCH_PIN=0` lets every process use every core, as on a user's machine. */
const PIN = process.env.BENCH_PIN !== '0'

export function hasTaskset (): boolean { return HAS_TASKSET }

/** `cmd args` prefixed with `taskset -c CPU` when taskset exists (taskset execs, so the pid stays the command's). */
export function pinned (cpu: number, cmd: string, args: string[]): [string, string[]] {
  return HAS_TASKSET && PIN ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args]
}

export interface Tracked {
  child: ChildProcess
  name: string
  /** Collected stderr (and stdout when piped), capped. */
  output: () => string
  exited: Promise<number | null>
}

const children = new Set<Tracked>()
const dirs = new Set<string>()

/**
 * Spawns a child that `cleanup` will stop. Its stderr (and stdout, unless `keepStdout` is false
 * because the caller reads stdout itself) is kept, first 64 KiB, for error messages.
 */
export function spawnTracked (name: string, cmd: string, args: string[], opts: SpawnOptions = {}, keepStdout = true): Tracked {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  let text = ''
  const keep = (chunk: Buffer): void => { if (text.length < 65536) text += chunk.toString('utf8') }
  if (keepStdout) child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<number | null>(resolve => {
    child.once('exit', code => resolve(code))
    child.once('error', err => { text += `\nspawn error: ${err.message}`; resolve(-1) })
  })
  const tracked: Tracked = { child, name, output: () => text, exited }
  children.add(tracked)
  void exited.then(() => children.delete(tracked))
  return tracked
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
export async function stopTracked (t: Tracked, graceMs = 5000): Promise<void> {
  if (t.child.exitCode !== null || t.child.signalCode !== null) { children.delete(t); return }
  t.child.kill('SIGTERM')
  const timer = setTimeout(() => t.child.kill('SIGKILL'), graceMs)
  await t.exited
  clearTimeout(timer)
  children.delete(t)
}

/** Runs a command to completion; resolves with stdout, rejects with stderr on a non-zero exit. */
export async function runCommand (cmd: string, args: string[], opts: SpawnOptions = {}): Promise<string> {
  const t = spawnTracked(cmd, cmd, args, opts)
  let out = ''
  t.child.stdout?.on('data', (c: Buffer) => { out += c.toString('utf8') })
  const code = await t.exited
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${t.output().slice(-4000)}`)
  return out
}

export function makeTempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  dirs.add(dir)
  return dir
}

/** Stops every tracked child and removes every temp dir. Safe to call twice. */
export async function cleanup (): Promise<void> {
  await Promise.all([...children].map(async t => await stopTracked(t)))
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs.clear()
}

/** Last resort when the process exits without `cleanup` having run (synchronous: SIGKILL and rm). */
function cleanupSync (): void {
  for (const t of children) {
    if (t.child.exitCode === null && t.child.signalCode === null) t.child.kill('SIGKILL')
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
}

let installed = false
let signalled = false
/** True once a signal started the cleanup: errors from killed children are then expected. */
export function interrupted (): boolean { return signalled }

export function installCleanupHandlers (): void {
  if (installed) return
  installed = true
  process.on('exit', cleanupSync)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      signalled = true
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`)
      cleanup().finally(() => process.exit(130))
    })
  }
}

export { freePort } from '../../test/helpers/net.ts'

/** Polls `url` until it answers with any HTTP status; throws if `proc` dies or `timeoutMs` passes. */
export async function waitForHttp (url: string, proc: Tracked, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`${proc.name} exited (${proc.child.exitCode ?? proc.child.signalCode}) before answering ${url}:\n${proc.output().slice(-4000)}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      return
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`${proc.name} did not answer ${url} within ${timeoutMs} ms:\n${proc.output().slice(-4000)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** A positive integer setting from the environment (`BENCH_REPS=5`), or its default. */
export function intEnv (name: string, def: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not '${v}'`)
  return n
}

/** Runs a bench's main: its failure is printed and sets the exit code; started processes are always stopped. */
export async function runBench (main: () => Promise<void>, finish?: () => Promise<void>): Promise<void> {
  installCleanupHandlers()
  try {
    await main()
  } catch (err) {
    if (!interrupted()) process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  } finally {
    await finish?.()
    await cleanup()
  }
}
