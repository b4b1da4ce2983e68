/**
 * A private binary cache behind HTTP Basic authentication, its credentials in the upstream's URL
 * as curl (and so Nix) reads them, or in a netrc file as Nix's netrc-file: the real Nix substitutes through narswarm, the credentials go
 * to that cache's origin only — not to another host named by a narinfo's absolute URL — and never
 * into narswarm's log or status.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { hashPartOf, readNarInfo, servedClosure, type Closure } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

// `%40` and `%3A` are decoded before the header is made, as curl does.
const USER = 'ci@example'
const TOKEN = 'tok:3n-secret'
const AUTHORIZATION = `Basic ${Buffer.from(`${USER}:${TOKEN}`).toString('base64')}`

describe('a private upstream with credentials in its URL', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let cacheDir: string
  let upstream: CacheServer

  before(async () => {
    nix = await makeNixEnv()
    ;({ closure, dir: cacheDir, upstream } = await servedClosure(nix, { authorization: AUTHORIZATION }))
  })
  after(async () => {
    await upstream?.close()
    await nix?.cleanup()
  })

  const withCredentials = (): string => {
    const u = new URL(upstream.url)
    u.username = encodeURIComponent(USER)
    u.password = encodeURIComponent(TOKEN)
    return `${u.toString().replace(/\/$/, '')}?trusted-public-keys=${closure.publicKey}`
  }

  /** Realises the closure through `substituter` into a fresh store; the paths it then holds. */
  const realise = async (substituter: string, name: string): Promise<string[]> => {
    const store = `local?root=${join(nix.dir, name)}`
    await nix.run('nix-store', ['--store', store, '--realise', closure.top,
      '--option', 'substituters', substituter, '--option', 'trusted-public-keys', closure.publicKey])
    return (await nix.run('nix-store', ['--store', store, '--query', '--requisites', closure.top])).trim().split('\n').sort()
  }

  test('the real Nix substitutes through narswarm; the token is never logged', async () => {
    assert.equal((await fetch(`${upstream.url}/nix-cache-info`)).status, 401, 'the cache refuses a request without credentials')
    const narswarm = await startNarswarm(['--upstream', withCredentials()])
    try {
      assert.deepEqual(await realise(narswarm.url, 'store-private'), [...closure.paths].sort())
      assert.ok(upstream.authorized.some(p => p.endsWith('.nar.xz')), 'NARs were fetched with the credentials')
      const status = await (await fetch(`${narswarm.url}/`)).text()
      for (const text of [status, JSON.stringify(narswarm.logs), narswarm.stderr()]) {
        assert.ok(!text.includes('3n-secret') && !text.includes(encodeURIComponent(TOKEN)), 'the token is in no log line or page')
      }
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  })

  test('the credentials from a netrc file, as Nix reads its netrc-file', async () => {
    const netrc = join(nix.dir, 'netrc')
    await writeFile(netrc, `machine 127.0.0.1 login "${USER}" password "${TOKEN}"\n`)
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`, '--netrc-file', netrc])
    try {
      assert.deepEqual(await realise(narswarm.url, 'store-netrc'), [...closure.paths].sort())
      assert.ok(!JSON.stringify(narswarm.logs).includes('3n-secret'), 'the token is in no log line')
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  })

  test('without credentials: a failure of the upstream (502, never a 404), and the log says what to do', async () => {
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
    try {
      assert.equal((await fetch(`${narswarm.url}/${hashPartOf(closure.note)}.narinfo`)).status, 502)
      const line = await narswarm.waitForLog(l => l.msg === 'upstream failed to answer a narinfo request')
      assert.match(String(line.err), /answered 401 .*wants credentials: put them in netrc-file, or in its URL/)
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  })

  test('a narinfo whose URL names another host: the NAR is fetched from there without the credentials', async () => {
    const storePath = closure.note
    const narinfo = await readNarInfo(cacheDir, storePath)
    const narUrl = /^URL: (.*)$/m.exec(narinfo)![1]!
    const elsewhere = join(nix.dir, 'cache-elsewhere')
    await mkdir(join(elsewhere, 'nar'), { recursive: true })
    await copyFile(join(cacheDir, narUrl), join(elsewhere, narUrl))
    const other = await startCacheServer(elsewhere)
    const hashPart = hashPartOf(storePath)
    const original = join(cacheDir, `${hashPart}.narinfo`)
    await writeFile(original, narinfo.replace(/^URL: .*$/m, `URL: ${other.url}/${narUrl}`))
    const narswarm = await startNarswarm(['--upstream', withCredentials()])
    try {
      const served = await (await fetch(`${narswarm.url}/${hashPart}.narinfo`)).text()
      const url = /^URL: (.*)$/m.exec(served)![1]!
      const nar = await fetch(`${narswarm.url}/${url}`)
      assert.equal(nar.status, 200)
      assert.equal((await nar.arrayBuffer()).byteLength, Number(/^NarSize: (\d+)$/m.exec(narinfo)![1]))
      assert.deepEqual(other.requests, [`GET /${narUrl}`])
      assert.deepEqual(other.authorized, [], 'the other host got no credentials')
      assert.ok(upstream.authorized.includes(`/${hashPart}.narinfo`))
    } finally {
      assert.equal(await narswarm.stop(), 0)
      await writeFile(original, narinfo)
      await other.close()
    }
  })
})
