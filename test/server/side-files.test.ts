/**
 * Build logs, NAR listings and realisations relayed from the upstreams (src/server/side-files.ts):
 * which paths count as side files, the order upstreams are asked in, and the statuses a client
 * gets — 404 only when every upstream said absent, a failure never taken for absence, a
 * Content-Encoding taken off, a body past its kind's limit cut rather than passed on.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sideFileOf, SIDE_FILES } from '../../src/server/side-files.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'

const HASH = '0123456789abcdfghijklmnpqrsvwxyz'
const DRV = `${HASH}-hello-2.12.drv`
const REALISATION = `sha256:${'ab'.repeat(32)}!out`
const LOG = `the build log of ${DRV}\n`.repeat(100)
const LISTING = JSON.stringify({ version: 1, root: { type: 'regular', size: 6, narOffset: 96 } })
const DOI = JSON.stringify({ dependentRealisations: {}, id: REALISATION, outPath: `${HASH}-hello-2.12`, signatures: [] })

describe('side files: which paths', () => {
  test('the paths Nix and Lix request, and nothing that merely looks like them', () => {
    const kinds = (path: string): string | undefined => sideFileOf(path)?.kind
    assert.equal(kinds(`/log/${DRV}`), 'build log')
    assert.equal(kinds(`/log/${HASH}-hello-2.12`), 'build log', 'any store path base name: relayed as asked')
    assert.equal(kinds(`/${HASH}.ls`), 'NAR listing')
    assert.equal(kinds(`/realisations/${REALISATION}.doi`), 'realisation (Nix ≤ 2.34)')
    assert.equal(kinds(`/build-trace-v2/${DRV}/out.doi`), 'realisation (Nix ≥ 2.35)')
    for (const path of [
      '/log/', `/log/${HASH}`, `/log/../${DRV}`, `/log/${DRV}/x`, `/log/${HASH.toUpperCase()}-x.drv`, `/log/${HASH}-a/b`,
      `/${HASH}.LS`, `/${HASH.slice(1)}.ls`, `/x/${HASH}.ls`,
      `/realisations/sha256:${'ab'.repeat(31)}!out.doi`, `/realisations/md5:${'ab'.repeat(32)}!out.doi`, `/realisations/${REALISATION}`,
      `/realisations/${REALISATION}.doi/..`, `/build-trace-v2/${DRV}/../out.doi`, `/build-trace-v2/${HASH}-x/out.doi`,
      `/debuginfo/${'a'.repeat(40)}`, `/nar/${HASH}.nar`
    ]) assert.equal(kinds(path), undefined, path)
    assert.equal(new Set(SIDE_FILES.map(k => k.kind)).size, SIDE_FILES.length)
  })
})

describe('side files relayed from the upstreams', () => {
  let dir: string
  let empty: string
  let first: CacheServer
  let second: CacheServer
  let narswarm: NarswarmProcess

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-side-'))
    empty = join(dir, 'empty')
    const full = join(dir, 'full')
    await mkdir(join(full, 'log'), { recursive: true })
    await mkdir(join(full, 'realisations'))
    await mkdir(join(full, 'build-trace-v2', DRV), { recursive: true })
    await mkdir(empty)
    await writeFile(join(full, 'log', DRV), LOG)
    await writeFile(join(full, `${HASH}.ls`), LISTING)
    await writeFile(join(full, 'realisations', `${REALISATION}.doi`), DOI)
    await writeFile(join(full, 'build-trace-v2', DRV, 'out.doi'), DOI)
    await writeFile(join(full, 'build-trace-v2', DRV, 'big.doi'), 'x'.repeat(2 << 20))
    // The preferred upstream has none of them: each is looked for in the next.
    first = await startCacheServer(empty)
    second = await startCacheServer(full)
    // No narinfo is asked for: these upstreams need no key.
    narswarm = await startNarswarm(['--upstream', `${first.url}?priority=10&require-sigs=false`, '--upstream', `${second.url}?priority=20&require-sigs=false`])
  })
  after(async () => {
    const code = await narswarm?.stop()
    await first?.close()
    await second?.close()
    await rm(dir, { recursive: true, force: true })
    assert.equal(code, 0)
  })

  test('each kind is answered from the first upstream that has it, as it is', async () => {
    for (const [path, body, type] of [
      [`/log/${DRV}`, LOG, 'text/plain; charset=utf-8'],
      [`/${HASH}.ls`, LISTING, 'application/json'],
      [`/realisations/${REALISATION}.doi`, DOI, 'application/json'],
      [`/build-trace-v2/${DRV}/out.doi`, DOI, 'application/json']
    ] as const) {
      const asked = first.requests.length
      const res = await fetch(`${narswarm.url}${path}`)
      assert.equal(res.status, 200, path)
      assert.equal(res.headers.get('content-type'), type)
      assert.equal(await res.text(), body)
      assert.deepEqual(first.requests.slice(asked), [`GET ${path}`], 'the preferred upstream was asked first')
    }
  })

  test('HEAD answers like GET, without a body', async () => {
    const res = await fetch(`${narswarm.url}/log/${DRV}`, { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.equal(await res.text(), '')
  })

  test('absent from every upstream: 404', async () => {
    assert.equal((await fetch(`${narswarm.url}/log/${HASH}-absent.drv`)).status, 404)
    assert.equal((await fetch(`${narswarm.url}/debuginfo/${'a'.repeat(40)}`)).status, 404, 'debuginfo points into NAR files narswarm does not serve')
  })

  test('an upstream that fails while none has it: 502, never 404', async () => {
    first.faults.push({ match: p => p.startsWith('/log/'), fault: { kind: 'status', status: 500 } })
    try {
      assert.equal((await fetch(`${narswarm.url}/log/${HASH}-absent.drv`)).status, 502)
      // The other upstream has it: the failure of the first does not stand in the way.
      const res = await fetch(`${narswarm.url}/log/${DRV}`)
      assert.equal(res.status, 200)
      assert.equal(await res.text(), LOG)
    } finally {
      first.faults.pop()
    }
  })

  test('a Content-Encoding is taken off; one narswarm cannot read counts as absent', async () => {
    second.faults.push({ match: p => p === `/log/${DRV}`, fault: { kind: 'encode', codings: ['gzip'] } })
    try {
      const res = await fetch(`${narswarm.url}/log/${DRV}`, { headers: { 'accept-encoding': 'identity' } })
      assert.equal(res.headers.get('content-encoding'), null)
      assert.equal(await res.text(), LOG)
    } finally {
      second.faults.pop()
    }
    second.faults.push({ match: p => p === `/log/${DRV}`, fault: { kind: 'encode', codings: ['deflate'] } })
    try {
      assert.equal((await fetch(`${narswarm.url}/log/${DRV}`)).status, 404)
    } finally {
      second.faults.pop()
    }
  })

  test('a body longer than its kind allows is cut, not passed on whole', async () => {
    const res = await fetch(`${narswarm.url}/build-trace-v2/${DRV}/big.doi`)
    assert.equal(res.status, 200)
    await assert.rejects(res.text())
    const line = await narswarm.waitForLog(l => l.msg === 'realisation (Nix ≥ 2.35) transfer aborted')
    assert.match(String(line.err), /longer than 1048576 bytes/)
  })
})
