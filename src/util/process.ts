/**
 * Other processes as files name them (lock files, temporary files, the owners of chunk packs):
 * whether one still runs. A pid alone says it for as long as the process runs; a pid with its
 * start time (`processTag`) still says it once the pid has gone to another process.
 */
import { readFileSync } from 'node:fs'

/** Whether a process with this pid exists (one of another user's counts too: EPERM). */
export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * When a process started, in clock ticks since boot (`/proc/<pid>/stat`); undefined where /proc
 * does not say. With the pid it names one process: a pid alone is reused, by the next boot's
 * narswarm in a container (often the same pid every start) as by anything else.
 */
export function startTime (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** `<pid>-<start time>`: this process, as `runs` recognises it later. */
export function processTag (): string {
  return `${process.pid}-${startTime(process.pid) ?? ''}`
}

/** Whether the process a `processTag` named still runs (the same pid started at the same time). */
export function runs (tag: string): boolean {
  const m = /^(\d+)-(\d*)/.exec(tag)
  if (m === null) return false
  const pid = Number(m[1])
  if (!isAlive(pid)) return false
  const started = startTime(pid)
  return m[2] === '' || started === undefined || started === m[2]
}
