/**
 * `narswarm peers`: asks the running node (its substituter listener, `--url`, default from the
 * `listen` setting) for the LAN peers it knows, and lists them best first with their scores and
 * what each served; `--json` prints the node's answer as it is.
 */
import { parseArgs } from 'node:util'
import { UsageError } from '../errors.ts'
import { PEERS } from '../server/app.ts'
import type { SwarmStatus } from '../peer/swarm.ts'
import { loadConfig } from './config.ts'

const USAGE = `Usage: narswarm peers [--url http://127.0.0.1:37515] [--json]

Lists the LAN peers the running narswarm knows: where they came from (static or discovered),
their score (higher is better), latency, failures, and what each served this node.
`

export async function peersCommand (argv: string[]): Promise<number> {
  let values: { url?: string, json?: boolean, help?: boolean, config?: string }
  try {
    values = parseArgs({ args: argv, options: { url: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, config: { type: 'string' } }, strict: true }).values
  } catch (err) {
    throw new UsageError(`peers: ${(err as Error).message}; 'narswarm peers --help' shows the options`)
  }
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  let base = values.url
  if (base === undefined) {
    const { host, port } = loadConfig({ flags: { config: values.config }, env: process.env }).listen
    base = `http://${host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host}:${port}`
  }
  let status: SwarmStatus
  try {
    const response = await fetch(new URL(PEERS, base), { signal: AbortSignal.timeout(5_000) })
    if (response.status === 404) {
      process.stderr.write(`narswarm peers: the node at ${base} has no LAN swarm (its chunk store is off)\n`)
      return 1
    }
    if (!response.ok) throw new Error(`answered ${response.status}`)
    status = await response.json() as SwarmStatus
  } catch (err) {
    process.stderr.write(`narswarm peers: cannot ask the node at ${base}: ${(err as Error).message}. Is 'narswarm serve' running?\n`)
    return 1
  }
  if (values.json === true) { process.stdout.write(`${JSON.stringify(status, null, 2)}\n`); return 0 }
  process.stdout.write(formatStatus(status))
  return 0
}

export function formatStatus (s: SwarmStatus): string {
  const lines = [
    `node ${s.nodeId}  chunker ${s.cdcId}`,
    `peer listener ${s.listener ?? 'off'}  discovery ${s.discovery}  group key ${s.groupKey ? 'on' : 'off'}`
  ]
  if (s.uploaded !== null) lines.push(`served to peers: ${s.uploaded.nars} manifests, ${s.uploaded.chunks} chunks, ${mib(s.uploaded.bytes)} (${s.uploaded.refused} requests refused)`)
  if (s.peers.length === 0) {
    lines.push('', 'no peers known')
    return `${lines.join('\n')}\n`
  }
  const rows = [['PEER', 'ORIGIN', 'SCORE', 'LATENCY', 'FAILED', 'BAD DATA', 'NARS', 'CHUNKS', 'BYTES', 'STATE']]
  const now = Date.now()
  for (const p of s.peers) {
    rows.push([
      p.url, p.origin, String(p.score), p.latency === undefined ? '-' : `${p.latency} ms`, String(p.failures), String(p.integrityFailures),
      String(p.served.nars), String(p.served.chunks), mib(p.served.bytes),
      p.coolingUntil > now ? `cooling ${Math.ceil((p.coolingUntil - now) / 1000)} s${p.lastError === undefined ? '' : ` (${p.lastError.slice(0, 60)})`}` : 'ok'
    ])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
  lines.push('', ...rows.map(r => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()))
  return `${lines.join('\n')}\n`
}

function mib (bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`
}
