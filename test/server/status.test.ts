/**
 * What a person and a monitoring system see: the status page in a real headless browser, `/health`
 * and `/metrics` after a real Nix substitution through narswarm, and the page's escaping of what
 * the outside world controls.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { servedClosure, type Closure } from '../helpers/closure.ts'
import type { CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { Observer } from '../../src/server/observer.ts'
import { renderStatusPage } from '../../src/server/status-page.ts'
import { nodeStatus } from '../../src/server/node-status.ts'
import { routeOf } from '../../src/server/app.ts'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(p => existsSync(p))

describe('status page, rendering', () => {
  test('escapes store paths, sources and logged reasons', () => {
    const observer = new Observer()
    observer.narServed({ storePath: '/nix/store/x-<script>alert(1)</script>', source: 'a"b', kind: 'upstream', bytes: 10, ms: 1 })
    observer.logTap({ level: 50, msg: 'NAR failed verification', err: '<img src=x onerror=alert(1)>' })
    const html = renderStatusPage(nodeStatus({ observer, version: '1', upstreams: () => [] }))
    assert.ok(!html.includes('<script>alert'), 'no markup from a store path')
    assert.ok(!html.includes('<img src=x'), 'no markup from a logged reason')
    assert.ok(html.includes('&#60;script&#62;'))
  })

  test('counts bytes by kind of source and what the central cache was spared', () => {
    const observer = new Observer()
    observer.narServed({ storePath: '/nix/store/a', source: 'u', kind: 'upstream', bytes: 100, ms: 1 })
    observer.narServed({ storePath: '/nix/store/b', source: 'store', kind: 'store', bytes: 300, ms: 1 })
    const status = nodeStatus({ observer, version: '1', upstreams: () => [] })
    assert.equal(status.upstreamBytesSpared, 300)
    assert.deepEqual(status.recentTransfers.map(t => t.storePath), ['/nix/store/b', '/nix/store/a'], 'newest first')
    assert.match(renderStatusPage(status), /75 %/)
  })

  test('metrics label requests by route, never by raw path', () => {
    assert.equal(routeOf('/0123456789abcdfghijklmnpqrsvwxyz.narinfo'), 'narinfo')
    assert.equal(routeOf('//nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar?hash=x'), 'nar')
    assert.equal(routeOf('/'), 'status-page')
    assert.equal(routeOf('/metrics'), 'metrics')
    assert.equal(routeOf('/log/0123456789abcdfghijklmnpqrsvwxyz-hello.drv'), 'side-file')
    assert.equal(routeOf('/some/random/thing'), 'other')
  })
})

describe('status page, /health and /metrics after a real substitution', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let upstream: CacheServer
  let narswarm: NarswarmProcess

  before(async () => {
    nix = await makeNixEnv()
    ;({ closure, upstream } = await servedClosure(nix))
    narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
    await nix.run('nix-store', ['--store', `local?root=${join(nix.dir, 'store')}`, '--realise', closure.top,
      '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', closure.publicKey])
    for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR served' && l.storePath === path)
  })
  after(async () => {
    await narswarm?.stop()
    await upstream?.close()
    await nix?.cleanup()
  })

  test('/health answers JSON for probes', async () => {
    const res = await fetch(`${narswarm.url}/health`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /application\/json/)
    const body = await res.json() as { status: string, version: string, upstreams: Array<{ name: string }> }
    assert.equal(body.status, 'ok')
    assert.match(body.version, /^\d+\.\d+\.\d+/)
    assert.equal(body.upstreams.length, 1)
  })

  test('/metrics counts the requests and the bytes Nix got, by source', async () => {
    const res = await fetch(`${narswarm.url}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/)
    const text = await res.text()
    const value = (line: RegExp): number => Number(line.exec(text)?.[1] ?? NaN)
    const served = value(/^narswarm_nars_served_total\{kind="upstream"\} (\d+)$/m) + value(/^narswarm_nars_served_total\{kind="store"\} (\d+)$/m)
    assert.equal(served, closure.paths.length, 'one NAR served per path of the closure')
    assert.ok(value(/^narswarm_http_requests_total\{route="narinfo",status="200"\} (\d+)$/m) >= closure.paths.length)
    assert.ok(value(/^narswarm_nar_bytes_served_total\{kind="upstream"\} (\d+)$/m) + value(/^narswarm_nar_bytes_served_total\{kind="store"\} (\d+)$/m) > 0)
    assert.match(text, /^narswarm_process_resident_memory_bytes \d+/m, 'process metrics too')
  })

  test('the page, loaded in a real headless browser, shows the transfers and their source', { skip: CHROMIUM === undefined ? 'chromium is not installed' : false }, async () => {
    const { stdout } = await promisify(execFile)(CHROMIUM!, ['--headless', '--no-sandbox', '--disable-gpu', '--dump-dom', `${narswarm.url}/`], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 })
    assert.match(stdout, /<h1>narswarm/)
    assert.match(stdout, /id="spared"/)
    assert.match(stdout, /central cache spared/)
    for (const path of closure.paths) assert.ok(stdout.includes(path), `the transfer of ${path} is listed`)
    assert.match(stdout, /id="transfers"/)
    assert.match(stdout, /upstream caches: <code>/, 'each transfer names its kind of source')
  })
})
