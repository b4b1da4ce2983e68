/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and lists where the time went: self time per
 * function (file:line), and inclusive time for each function (counted once per sample even when
 * it recurses), as percentages of all samples, idle time included. Times are sampled wall time
 * of the main thread: a syscall shows as the native function that made it (e.g. `writev`).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

export interface ProfileLine { name: string, ms: number, pct: number }

export interface ProfileSummary {
  totalMs: number
  idlePct: number
  self: ProfileLine[]
  inclusive: ProfileLine[]
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

function label (node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  let where = url
  if (url.startsWith('file://')) where = relative(ROOT, fileURLToPath(url))
  const name = functionName === '' ? '(anonymous)' : functionName
  return where === '' ? name : `${name} ${where}:${lineNumber + 1}`
}

/** `windowMs`: only the samples of the profile's last `windowMs` (the measured phase, not start-up). */
export function summarizeProfile (file: string, opts: { top?: number, windowMs?: number } = {}): ProfileSummary {
  const top = opts.top ?? 25
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const from = opts.windowMs === undefined ? -Infinity : profile.endTime - opts.windowMs * 1000
  let at = profile.startTime
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const selfUs = new Map<string, number>()
  const inclUs = new Map<string, number>()
  let total = 0
  let idle = 0
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0
    at += dt
    if (at < from) return
    total += dt
    const node = byId.get(id)
    if (node === undefined) return
    const self = label(node)
    if (node.callFrame.functionName === '(idle)') idle += dt
    selfUs.set(self, (selfUs.get(self) ?? 0) + dt)
    const seen = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur)!)
      if (seen.has(l)) continue
      seen.add(l)
      inclUs.set(l, (inclUs.get(l) ?? 0) + dt)
    }
  })
  const lines = (m: Map<string, number>): ProfileLine[] => [...m.entries()]
    .sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([name, us]) => ({ name, ms: us / 1000, pct: (100 * us) / total }))
  inclUs.delete('(root)')
  return { totalMs: total / 1000, idlePct: (100 * idle) / total, self: lines(selfUs), inclusive: lines(inclUs) }
}

/**
 * The newest `.cpuprofile` in `dir`, or undefined. `narswarm serve` re-executes itself with its
 * own V8 flags (src/cli/node-flags.ts), and each process image writes a profile: the server's is
 * the last, the first holds only the start-up before the re-execution.
 */
export function newestProfile (dir: string): string | undefined {
  const files = readdirSync(dir).filter(f => f.endsWith('.cpuprofile')).map(f => join(dir, f))
  return files.sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs).at(-1)
}
