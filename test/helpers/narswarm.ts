/**
 * Starts the real `narswarm serve` as a child process (the entry point `npm start` runs, from the
 * sources rather than compiled) on a free port with its own state directory, and collects its JSON
 * log lines so a test can assert what it logged and why.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

export interface LogLine { level: number, msg: string, [key: string]: unknown }

export interface NarswarmProcess {
  url: string
  /** The peer listener's base URL; undefined when it is off. */
  peerUrl?: string
  stateDir: string
  child: ChildProcess
  logs: LogLine[]
  stderr: () => string
  /** Resolves with the first log line that matches (waiting up to `timeout` ms). */
  waitForLog: (match: (line: LogLine) => boolean, timeout?: number) => Promise<LogLine>
  /** SIGTERM, then waits for the exit code. */
  stop: () => Promise<number | null>
}

/**
 * `opts.wrap` runs it through a command prefix, e.g. `ip netns exec <name>` to start it inside a
 * network namespace (test/helpers/netns.ts).
 */
export async function startNarswarm (args: string[], opts: { env?: NodeJS.ProcessEnv, wrap?: string[] } = {}): Promise<NarswarmProcess> {
  const stateDir = await mkdtemp(join(tmpdir(), 'narswarm-state-'))
  const [command, ...prefix] = [...opts.wrap ?? [], process.execPath]
  const child = spawn(command!, [...prefix, '--disable-warning=ExperimentalWarning', MAIN, 'serve',
    '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--log-level', 'debug',
    // No test joins anything outside itself: the peer listener on a free loopback port, no mDNS,
    // unless the test's own arguments (which come later and win) say otherwise.
    '--peer-listen', '127.0.0.1:0', '--discovery', 'off', ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  const logs: LogLine[] = []
  let raw = ''
  let waiters: Array<() => void> = []
  let pending = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (text: string) => {
    raw += text
    pending += text
    const lines = pending.split('\n')
    pending = lines.pop()!
    for (const line of lines) {
      try { logs.push(JSON.parse(line) as LogLine) } catch { /* not JSON: kept in raw */ }
    }
    for (const w of waiters) w()
  })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const waitForLog = async (match: (line: LogLine) => boolean, timeout = 20_000): Promise<LogLine> => {
    const deadline = Date.now() + timeout
    for (;;) {
      const found = logs.find(match)
      if (found !== undefined) return found
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`narswarm did not log the expected line (exit ${child.exitCode}); stderr:\n${raw.slice(0, 6000)}`)
      }
      await new Promise<void>(resolve => {
        const t = setTimeout(resolve, 100)
        waiters.push(() => { clearTimeout(t); resolve() })
      })
      waiters = []
    }
  }
  const listening = await waitForLog(l => l.msg === 'narswarm substituter listening')
  return {
    url: listening.url as string,
    ...(typeof listening.peerUrl === 'string' ? { peerUrl: listening.peerUrl } : {}),
    stateDir,
    child,
    logs,
    stderr: () => raw,
    waitForLog,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      const code = await exited
      await rm(stateDir, { recursive: true, force: true })
      return code
    }
  }
}

/** Runs a one-shot `narswarm` command (publish, keys, index…) to completion. */
export async function runNarswarm (args: string[], opts: { env?: NodeJS.ProcessEnv, input?: string, wrap?: string[] } = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const [command, ...prefix] = [...opts.wrap ?? [], process.execPath]
  const child = spawn(command!, [...prefix, '--disable-warning=ExperimentalWarning', MAIN, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s })
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  child.stdin!.end(opts.input ?? '')
  const code = await new Promise<number | null>(resolve => child.once('close', c => resolve(c)))
  return { code, stdout, stderr }
}
