import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { ExecBackend, EXEC_DEFAULTS, plugin } from '../../src/backend/exec.ts'
import { ConfigError, UpstreamError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { collect } from '../helpers/bytes.ts'

const components = { log: silentLogger(), stateDir: tmpdir() }
const FETCHER = fileURLToPath(new URL('../fixtures/exec-fetcher.ts', import.meta.url))

/** The spec running the fixture fetcher with this Node. */
function fixtureSpec (options = ''): URL {
  const u = new URL(`exec://${process.execPath}`)
  u.searchParams.append('arg', '--disable-warning=ExperimentalWarning')
  u.searchParams.append('arg', FETCHER)
  return new URL(`${u.href}${options}`)
}

const locatorFor = (path: string, query = ''): string => `exec://${path}${query}`

/** Whether a process with this id still exists (reaped, not just killed). */
function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

async function waitGone (pid: number): Promise<boolean> {
  for (let i = 0; i < 200 && alive(pid); i++) await sleep(25)
  return !alive(pid)
}

async function waitPid (file: string): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const text = await readFile(file, 'utf8').catch(() => '')
    if (text !== '') return Number(text)
    await sleep(25)
  }
  throw new Error('the fetcher never wrote its pid')
}

let store: string
before(async () => { store = await mkdtemp(join(tmpdir(), 'exec-store-')) })
after(async () => { await rm(store, { recursive: true, force: true }) })

describe('exec backend spec', () => {
  it('parses a program with defaults', () => {
    assert.deepEqual(plugin.parse(new URL('exec:///usr/bin/fetcher')), {
      program: '/usr/bin/fetcher', args: [], timeout: 30_000, schemes: ['exec'], maxProcesses: EXEC_DEFAULTS.maxProcesses
    })
  })
  it('parses every option', () => {
    assert.deepEqual(plugin.parse(new URL('exec:///opt/my%20tools/fetch?timeout=2m&compression=xz&arg=-v&arg=--fast&scheme=s3&scheme=gs&max-processes=4')), {
      program: '/opt/my tools/fetch', args: ['-v', '--fast'], timeout: 120_000, compression: 'xz', schemes: ['s3', 'gs'], maxProcesses: 4
    })
  })
  const invalid: Array<[string, RegExp]> = [
    ['exec://usr/bin/fetcher', /must be an absolute path/],
    ['exec:fetcher', /must be an absolute path/],
    ['exec:///usr/bin/', /names a directory/],
    ['exec:///usr/bin/fetcher?timeout=forever', /timeout must be a duration/],
    ['exec:///usr/bin/fetcher?timeout=0s', /timeout must be more than 0/],
    ['exec:///usr/bin/fetcher?compression=gzip', /compression must be one of/],
    ['exec:///usr/bin/fetcher?retries=2', /unknown option 'retries'/],
    ['exec:///usr/bin/fetcher?max-processes=0', /max-processes must be at least 1/],
    ['exec:///usr/bin/fetcher?scheme=S%203', /is not a URL scheme/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('exec backend', () => {
  let backend: ExecBackend
  before(async () => { backend = await plugin.create(plugin.parse(fixtureSpec('&timeout=20s')), components) as ExecBackend })
  after(async () => { await backend.close() })

  it('exit 3 is "not there"', async () => {
    assert.equal(await backend.open({ url: locatorFor(join(store, 'nothing-here.nar')), compression: 'none' }), undefined)
  })

  it('a crash is an UpstreamError carrying the last line of stderr', async () => {
    await assert.rejects(backend.open({ url: locatorFor('/x', '?crash=disk%20on%20fire'), compression: 'none' }), (err: unknown) =>
      err instanceof UpstreamError && /exited with 2: disk on fire$/.test(err.message))
  })

  it('exit 3 after a crash message is still absence only without output', async () => {
    assert.equal(await backend.open({ url: locatorFor('/x', '?crash=gone&code=3'), compression: 'none' }), undefined)
  })

  it('the compression comes from the locator URL, else the spec, else the locator', async () => {
    const path = join(store, 'c.nar')
    await writeFile(path, 'abc')
    const fromUrl = await backend.open({ url: locatorFor(path, '?compression=br'), compression: 'xz' })
    assert.equal(fromUrl?.compression, 'br')
    await collect(fromUrl!.body)
    const fromLocator = await backend.open({ url: locatorFor(path), compression: 'xz' })
    assert.equal(fromLocator?.compression, 'xz')
    await collect(fromLocator!.body)
    const fixed = await plugin.create(plugin.parse(fixtureSpec('&compression=zstd')), components)
    try {
      const source = await fixed.open({ url: locatorFor(path), compression: 'xz' })
      assert.equal(source?.compression, 'zstd')
      assert.equal((await collect(source!.body)).toString(), 'abc')
    } finally { await fixed.close?.() }
  })

  it('aborting kills the program', async () => {
    const pidfile = join(store, `pid-${randomBytes(4).toString('hex')}`)
    const controller = new AbortController()
    const source = await backend.open({ url: locatorFor('/x', `?endless=1&pidfile=${encodeURIComponent(pidfile)}`), compression: 'none' }, { signal: controller.signal })
    assert.ok(source !== undefined)
    const pid = await waitPid(pidfile)
    await assert.rejects((async () => { for await (const _ of source.body) controller.abort(new Error('enough')) })(), /enough/)
    assert.ok(await waitGone(pid), 'the fetcher is still running')
  })

  it('stopping to read kills the program', async () => {
    const pidfile = join(store, `pid-${randomBytes(4).toString('hex')}`)
    const source = await backend.open({ url: locatorFor('/x', `?endless=1&pidfile=${encodeURIComponent(pidfile)}`), compression: 'none' })
    const pid = await waitPid(pidfile)
    for await (const _ of source!.body) break
    assert.ok(await waitGone(pid), 'the fetcher is still running')
  })

  it('a body that is never read can still be given back', async () => {
    const pidfile = join(store, `pid-${randomBytes(4).toString('hex')}`)
    const source = await backend.open({ url: locatorFor('/x', `?endless=1&pidfile=${encodeURIComponent(pidfile)}`), compression: 'none' })
    const pid = await waitPid(pidfile)
    await source!.body[Symbol.asyncIterator]().return?.()
    assert.ok(await waitGone(pid), 'the fetcher is still running')
  })

  it('aborting while the program is silent kills it', async () => {
    const pidfile = join(store, `pid-${randomBytes(4).toString('hex')}`)
    const controller = new AbortController()
    const opening = backend.open({ url: locatorFor('/x', `?silent=1&pidfile=${encodeURIComponent(pidfile)}`), compression: 'none' }, { signal: controller.signal })
    const pid = await waitPid(pidfile)
    controller.abort(new Error('changed my mind'))
    await assert.rejects(opening, /changed my mind/)
    assert.ok(await waitGone(pid), 'the fetcher is still running')
  })

  it('a program silent for longer than the timeout is killed and reported as a timeout', async () => {
    const quick = await plugin.create(plugin.parse(fixtureSpec('&timeout=300ms')), components)
    try {
      await assert.rejects(quick.open({ url: locatorFor('/x', '?silent=1'), compression: 'none' }), (err: unknown) =>
        err instanceof UpstreamError && err.timeout && /silent/.test(err.message))
    } finally { await quick.close?.() }
  })

  it('a program that cannot be started is an UpstreamError', async () => {
    const missing = await plugin.create(plugin.parse(new URL('exec:///nonexistent/fetcher')), components)
    try {
      await assert.rejects(missing.open({ url: 'exec:///x', compression: 'none' }), (err: unknown) => err instanceof UpstreamError && /could not be started/.test(err.message))
    } finally { await missing.close?.() }
  })
})
