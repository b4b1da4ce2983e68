import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { ConfigError, FormatError, UpstreamError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin } from '../../src/mapper/exec.ts'
import type { Mapper } from '../../src/types.ts'
import { tempDir } from '../helpers/temp.ts'

const FIXTURE = fileURLToPath(new URL('../fixtures/exec-mapper.ts', import.meta.url))

/** A spec that runs the fixture with this Node and `flags`, backed by a fresh JSON file. */
function fixtureSpec (flags: string[] = [], query = ''): string {
  const dir = tempDir()
  const args = ['--disable-warning=ExperimentalWarning', FIXTURE, `--db=${join(dir, 'db.json')}`, ...flags]
  return `exec://${process.execPath}?${args.map(a => `arg=${encodeURIComponent(a)}`).join('&')}${query}`
}
const components = { log: silentLogger(), stateDir: tmpdir() }
async function open (spec: string): Promise<Mapper> {
  return await plugin.create(plugin.parse(new URL(spec)), components)
}
const hash = (): NixHash => NixHash.of('sha256', randomBytes(32))


describe('exec mapper spec', () => {
  const valid: Array<[string, unknown]> = [
    ['exec:///usr/local/bin/my-mapper', { name: 'exec:///usr/local/bin/my-mapper', program: '/usr/local/bin/my-mapper', args: [], timeout: 10_000 }],
    ['exec:///usr/local/bin/my-mapper?timeout=5s', { name: 'exec:///usr/local/bin/my-mapper', program: '/usr/local/bin/my-mapper', args: [], timeout: 5000 }],
    ['exec:///usr/bin/env?arg=my-mapper&arg=--db%3D%2Fsrv%2Fdb&timeout=250ms', { name: 'exec:///usr/bin/env', program: '/usr/bin/env', args: ['my-mapper', '--db=/srv/db'], timeout: 250 }]
  ]
  for (const [spec, init] of valid) it(`accepts ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), init))
  const invalid: Array<[string, RegExp]> = [
    ['exec:', /path is missing/],
    ['exec:my-mapper', /relative/],
    ['exec://host/usr/bin/my-mapper', /host/],
    ['exec:///usr/bin/my-mapper?retries=2', /unknown option 'retries'/],
    ['exec:///usr/bin/my-mapper?timeout=forever', /'timeout' must be a duration/],
    ['exec:///usr/bin/my-mapper?timeout=0', /'timeout' must be more than 0/],
    ['exec:///usr/bin/my-mapper?arg=a%00b', /NUL/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('exec mapper program failures', () => {
  it('a program that dies mid-request fails that request; the next lookup works after a restart', async () => {
    const deadly = hash()
    const m = await open(fixtureSpec([`--die-on=${deadly.toString()}`]))
    const narHash = hash()
    await m.record!(narHash, { url: 'file:///a', compression: 'none' })
    await assert.rejects(m.lookup(deadly), (err: unknown) => err instanceof UpstreamError && /exited with status 3/.test(err.message))
    assert.deepEqual(await m.lookup(narHash), [{ url: 'file:///a', compression: 'none' }])
    await m.close!()
  })

  it('a program that does not answer fails the request with a timeout, and is replaced', async () => {
    const stuck = hash()
    const m = await open(fixtureSpec([`--hang-on=${stuck.toString()}`], '&timeout=300ms'))
    await assert.rejects(m.lookup(stuck), (err: unknown) => err instanceof UpstreamError && err.timeout)
    assert.deepEqual(await m.lookup(hash()), [])
    await m.close!()
  })

  it('output that is not JSON fails the request and restarts the program; a malformed locator is a FormatError', async () => {
    const garbage = hash()
    const bad = hash()
    const failing = hash()
    const m = await open(fixtureSpec([`--garbage-on=${garbage.toString()}`, `--bad-on=${bad.toString()}`, `--error-on=${failing.toString()}`]))
    await assert.rejects(m.lookup(garbage), (err: unknown) => err instanceof UpstreamError && /not a JSON answer/.test(err.message))
    await assert.rejects(m.lookup(bad), FormatError)
    await assert.rejects(m.lookup(failing), (err: unknown) => err instanceof UpstreamError && /index offline/.test(err.message))
    assert.deepEqual(await m.lookup(hash()), [])
    await m.close!()
  })

  it('a program that cannot be run fails create with an UpstreamError', async () => {
    await assert.rejects(open('exec:///nonexistent/narswarm-mapper'), UpstreamError)
  })

  it('methods exist only for the operations the program names in its hello', async () => {
    const m = await open(fixtureSpec(['--no-record']))
    assert.equal(m.record, undefined)
    assert.equal(m.narInfo, undefined)
    assert.deepEqual(await m.lookup(hash()), [])
    await m.close!()
  })

  it('requests in flight all get their own answers', async () => {
    const m = await open(fixtureSpec())
    const hashes = Array.from({ length: 20 }, hash)
    await Promise.all(hashes.map((h, i) => m.record!(h, { url: `file:///${i}`, compression: 'none' })))
    const found = await Promise.all(hashes.map(h => m.lookup(h)))
    found.forEach((l, i) => assert.deepEqual(l, [{ url: `file:///${i}`, compression: 'none' }]))
    await m.close!()
  })
})
