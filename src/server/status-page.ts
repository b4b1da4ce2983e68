/**
 * The status page at `/`: one self-contained HTML page for people, rendered on the server from a
 * NodeStatus — no script, no build step, no request to anywhere else, so it works offline and in
 * any browser. It refreshes itself every few seconds. Every value from the outside world (store
 * paths, source names, logged reasons) is escaped.
 */
import type { NodeStatus } from './node-status.ts'
import { SOURCE_KINDS } from './observer.ts'
import { formatBytes } from '../util/bytes.ts'

const KIND_LABEL: Record<string, string> = {
  store: 'chunk store',
  peer: 'LAN peers',
  backend: 'indexed sources',
  upstream: 'upstream caches'
}

export function renderStatusPage (s: NodeStatus): string {
  const served = SOURCE_KINDS.reduce((sum, k) => sum + s.bytesByKind[k], 0)
  const share = served === 0 ? '—' : `${Math.round(100 * s.upstreamBytesSpared / served)} %`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>narswarm ${esc(s.version)}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;padding:0 1rem;color:#1d2330;background:#fbfbfd}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
.muted{color:#667}.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:1rem}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:.7rem 1rem;min-width:11rem}
.card b{display:block;font-size:1.35rem}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef;vertical-align:top}
th{font-weight:600;color:#445}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em;word-break:break-all}.bad{color:#a11}.ok{color:#176}
</style></head><body>
<h1>narswarm <span class="muted">${esc(s.version)}</span></h1>
<div class="muted">up ${duration(s.uptimeSeconds)} · since ${esc(s.startedAt)}</div>
<div class="cards" id="summary">
<div class="card" id="spared"><span class="muted">central cache spared</span><b>${formatBytes(s.upstreamBytesSpared)}</b><span class="muted">${share} of ${formatBytes(served)} served</span></div>
${SOURCE_KINDS.map(k => `<div class="card" id="from-${k}"><span class="muted">from ${KIND_LABEL[k]}</span><b>${formatBytes(s.bytesByKind[k])}</b></div>`).join('\n')}
</div>
<h2>What this node holds</h2>
${s.store === null
    ? '<p class="muted" id="store">No chunk store on this node.</p>'
    : `<table id="store"><tr><th>NARs</th><th>chunks</th><th>NAR bytes</th><th>on disk</th><th>ratio</th>${s.store.capacityBytes === undefined ? '' : '<th>cap</th>'}</tr>
<tr><td class="n">${s.store.nars}</td><td class="n">${s.store.chunks}</td><td class="n">${formatBytes(s.store.logicalBytes)}</td><td class="n">${formatBytes(s.store.storedBytes)}</td><td class="n">${s.store.storedBytes > 0 ? (s.store.logicalBytes / s.store.storedBytes).toFixed(2) + '×' : '—'}</td>${s.store.capacityBytes === undefined ? '' : `<td class="n">${formatBytes(s.store.capacityBytes)}</td>`}</tr></table>`}
<h2>Peers</h2>
${s.peers === null
    ? '<p class="muted" id="peers">LAN sharing is off on this node.</p>'
    : s.peers.length === 0
      ? '<p class="muted" id="peers">No peers found yet.</p>'
      : `<table id="peers"><tr><th>peer</th><th>found by</th><th>score</th><th>state</th><th>received from it</th></tr>
${s.peers.map(p => `<tr><td><code>${esc(p.url)}</code>${p.id === undefined ? '' : ` <span class="muted">${esc(p.id)}</span>`}</td><td>${esc(p.origin ?? '')}</td><td class="n">${p.score === undefined ? '' : p.score.toFixed(2)}</td><td class="${p.healthy === false ? 'bad' : 'ok'}">${p.healthy === false ? 'cooling down' : 'healthy'}</td><td class="n">${p.bytesReceived === undefined ? '' : formatBytes(p.bytesReceived)}</td></tr>`).join('\n')}</table>`}
<h2>Upstream caches</h2>
<table id="upstreams"><tr><th>upstream</th><th>state</th></tr>
${s.upstreams.map(u => `<tr><td><code>${esc(u.name)}</code></td><td class="${u.onProbation ? 'bad' : 'ok'}">${u.onProbation ? 'on probation (sent bad bytes)' : 'in use'}</td></tr>`).join('\n')}</table>
<h2>Recent transfers</h2>
${s.recentTransfers.length === 0
    ? '<p class="muted" id="transfers">Nothing served yet.</p>'
    : `<table id="transfers"><tr><th>time</th><th>store path</th><th>source</th><th>bytes</th><th>ms</th></tr>
${s.recentTransfers.map(t => `<tr><td>${esc(time(t.at))}</td><td><code>${esc(t.storePath)}</code></td><td>${esc(KIND_LABEL[t.kind] ?? t.kind)}${t.kind === 'store' || t.kind === 'peer' ? '' : `: <code>${esc(t.source)}</code>`}</td><td class="n">${formatBytes(t.bytes)}</td><td class="n">${t.ms}</td></tr>`).join('\n')}</table>`}
<h2>Recent failures</h2>
${s.recentFailures.length === 0
    ? '<p class="muted" id="failures">None.</p>'
    : `<table id="failures"><tr><th>time</th><th>what</th><th>reason</th></tr>
${s.recentFailures.map(f => `<tr><td>${esc(time(f.at))}</td><td>${esc(f.what)}${f.storePath === undefined ? '' : `<br><code>${esc(f.storePath)}</code>`}${f.source === undefined ? '' : `<br><span class="muted">${esc(f.source)}</span>`}</td><td class="bad">${esc(f.reason)}</td></tr>`).join('\n')}</table>`}
<p class="muted">Machine-readable: <a href="/status.json">/status.json</a> · <a href="/health">/health</a> · <a href="/metrics">/metrics</a></p>
</body></html>
`
}

function esc (text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)
}

function duration (seconds: number): string {
  if (seconds < 60) return `${seconds} s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`
  return `${Math.floor(seconds / 3600)} h ${Math.floor(seconds % 3600 / 60)} min`
}

function time (iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}
