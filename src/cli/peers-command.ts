/**
 * `narswarm peers`: asks the running node (its substituter listener, `--url`, default from the
 * `listen` setting) for the LAN peers it knows, and lists them best first with their scores and
 * what each served; `--json` prints the node's answer as it is.
 */
import { PEERS } from '../server/app.ts'
import type { SwarmStatus } from '../peer/swarm.ts'
import { formatBytes } from '../util/bytes.ts'
import { parseCommandLine, str, type OptionTable } from './args.ts'
import { loadConfig, settingFlags, settingOptions } from './config.ts'

export const PEERS_DESCRIPTION = 'Lists the LAN peers the running narswarm knows: where they came from (static or discovered), their score (higher is better), latency, failures, and what each served this node.'

export const PEERS_OPTIONS: OptionTable = {
  url: { type: 'string', value: 'URL', help: "the node's substituter address", default: "from the 'listen' setting" },
  json: { type: 'boolean', help: "print the node's answer as it is" },
  ...settingOptions(['config'])
}

export async function peersCommand (argv: string[]): Promise<number> {
  const { values } = parseCommandLine('peers', argv, PEERS_OPTIONS)
  const base = str(values, 'url') ?? nodeUrl(loadConfig({ flags: settingFlags(values, ['config']), env: process.env }).listen)
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
  if (s.uploaded !== null) lines.push(`served to peers: ${s.uploaded.nars} manifests, ${s.uploaded.chunks} chunks, ${formatBytes(s.uploaded.bytes)} (${s.uploaded.refused} requests refused)`)
  if (s.peers.length === 0) {
    lines.push('', 'no peers known')
    return `${lines.join('\n')}\n`
  }
  const rows = [['PEER', 'ORIGIN', 'SCORE', 'LATENCY', 'FAILED', 'BAD DATA', 'NARS', 'CHUNKS', 'BYTES', 'STATE']]
  const now = Date.now()
  for (const p of s.peers) {
    rows.push([
      p.url, p.origin, String(p.score), p.latency === undefined ? '-' : `${p.latency} ms`, String(p.failures), String(p.integrityFailures),
      String(p.served.nars), String(p.served.chunks), formatBytes(p.served.bytes),
      p.coolingUntil > now ? `cooling ${Math.ceil((p.coolingUntil - now) / 1000)} s${p.lastError === undefined ? '' : ` (${p.lastError.slice(0, 60)})`}` : 'ok'
    ])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
  lines.push('', ...rows.map(r => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()))
  return `${lines.join('\n')}\n`
}

/** Where a client on this machine reaches a listener bound to `host:port`. */
function nodeUrl ({ host, port }: { host: string, port: number }): string {
  const reachable = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host
  return `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`
}
