/**
 * `narswarm serve` as the bench runs it: the real entry point (`src/cli/main.ts`) under the same
 * Node as this script, pinned to the server CPU, on a port picked here, with its own state dir,
 * `--log-level warn`. Optionally with `--cpu-prof` (the profile is written when it exits on SIGTERM).
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, pinned, SERVER_CPU, spawnTracked, stopTracked, waitForHttp, type Tracked } from './procs.ts'

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

export interface NarswarmServer {
  url: string
  pid: number
  proc: Tracked
  stop: () => Promise<void>
}

export async function startNarswarm (upstream: string, stateDir: string, opts: { cpuProfDir?: string, args?: string[] } = {}): Promise<NarswarmServer> {
  const port = await freePort()
  const nodeArgs = ['--disable-warning=ExperimentalWarning']
  if (opts.cpuProfDir !== undefined) nodeArgs.push('--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir)
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, [...nodeArgs, MAIN, 'serve',
    '--listen', `127.0.0.1:${port}`, '--state-dir', stateDir, '--log-level', 'warn', '--upstream', upstream,
    // A bench node shares nothing beyond this machine: no mDNS, the peer listener on loopback.
    '--discovery', 'off', '--peer-listen', '127.0.0.1:0', ...(opts.args ?? [])])
  const proc = spawnTracked('narswarm', cmd, args)
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/nix-cache-info`, proc)
  const pid = proc.child.pid
  if (pid === undefined) throw new Error('narswarm has no pid')
  return { url, pid, proc, stop: async () => await stopTracked(proc, 15_000) }
}

/** A field of /proc/PID/status in kB (VmHWM = peak RSS, VmRSS = current), or undefined off Linux. */
export function procStatusKb (pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(join('/proc', String(pid), 'status'), 'utf8'))
    return m === null ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

/** CPU time a process has used so far, every thread, in seconds (utime + stime of /proc/PID/stat), or undefined off Linux. */
export function procCpuSeconds (pid: number): number | undefined {
  try {
    // The fields after the command name, which may hold spaces, start after its closing parenthesis.
    const fields = readFileSync(join('/proc', String(pid), 'stat'), 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return undefined
  }
}
/** USER_HZ: 100 on every Linux architecture narswarm runs on. */
const CLOCK_TICKS = 100

const BASELINE = fileURLToPath(new URL('./baseline-server.ts', import.meta.url))

/** One of the minimal Node servers of `baseline-server.ts`, pinned like narswarm. */
export async function startBaseline (mode: 'narinfo' | 'relay', arg: string): Promise<NarswarmServer> {
  const port = await freePort()
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, ['--disable-warning=ExperimentalWarning', BASELINE, mode, String(port), arg])
  const proc = spawnTracked(`node baseline (${mode})`, cmd, args)
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(`${url}/nix-cache-info`, proc)
  const pid = proc.child.pid
  if (pid === undefined) throw new Error('baseline server has no pid')
  return { url, pid, proc, stop: async () => await stopTracked(proc) }
}
