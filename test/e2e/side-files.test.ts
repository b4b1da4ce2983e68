/**
 * What a cache offers besides narinfos and NARs, through narswarm, with the real Nix: a build log
 * that `nix store copy-log` put into a Nix-written cache is read by `nix log`, and the realisation
 * `nix copy` wrote for a content-addressed derivation lets Nix substitute that derivation's output
 * instead of building it. Before narswarm relayed them, both were 404: `nix log` said no log was
 * available and Nix ran the builder.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { signingKey } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'

describe('build logs, listings and realisations through narswarm', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let upstream: CacheServer
  let narswarm: NarswarmProcess
  let publicKey: string
  let file: string
  let logged: string
  let loggedDrv: string
  let marker: string
  const nonce = randomBytes(8).toString('hex')

  before(async () => {
    nix = await makeNixEnv('extra-experimental-features = ca-derivations')
    marker = join(nix.dir, 'ca-builder-ran')
    file = join(nix.dir, 'side.nix')
    // sandbox = false: the content-addressed builder can leave a mark outside the store when it runs.
    await writeFile(file, `{
  logged = builtins.derivation { name = "logged"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
    args = [ "-c" "echo build-log-line-${nonce}; echo done > $out" ]; };
  ca = builtins.derivation { name = "ca-output"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
    __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256";
    args = [ "-c" "echo ran >> ${marker}; echo ca-${nonce} > $out" ]; };
}
`)
    logged = (await nix.run('nix-build', [file, '-A', 'logged', '--no-out-link'])).trim()
    loggedDrv = (await nix.run('nix-instantiate', [file, '-A', 'logged'])).trim()
    await nix.run('nix-build', [file, '-A', 'ca', '--no-out-link'])
    const key = await signingKey(nix, nonce)
    publicKey = key.publicKey
    const dir = join(nix.dir, 'cache')
    const to = `file://${dir}?secret-key=${key.secretKeyFile}&write-nar-listing=1`
    await nix.run('nix', ['copy', '--to', to, logged])
    await nix.run('nix', ['store', 'copy-log', '--to', to, loggedDrv])
    await nix.run('nix', ['copy', '--to', to, '-f', file, 'ca'])
    assert.equal((await readdir(join(dir, 'realisations'))).length, 1, 'nix copy wrote the realisation')
    upstream = await startCacheServer(dir)
    narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${publicKey}`])
  })
  after(async () => {
    const code = await narswarm?.stop()
    await upstream?.close()
    await nix?.cleanup()
    assert.equal(code, 0)
  })

  const through = { NIX_CONFIG: '' }
  before(() => { through.NIX_CONFIG = `substituters = ${narswarm.url}\ntrusted-public-keys = ${publicKey}` })

  test('nix log reads the build log the cache holds', async () => {
    const store = `local?root=${join(nix.dir, 'store-log')}`
    const out = await nix.run('nix', ['log', '--store', store, logged], { env: through })
    assert.match(out, new RegExp(`build-log-line-${nonce}`))
    assert.ok(upstream.requests.includes(`GET /log/${loggedDrv.slice('/nix/store/'.length)}`), 'the log came from the upstream')
  })

  test('a content-addressed derivation is substituted through its realisation, not built', async () => {
    const store = join(nix.dir, 'store-ca')
    const out = (await nix.run('nix-build', ['--store', `local?root=${store}`, file, '-A', 'ca', '--no-out-link'], { env: through })).trim()
    assert.equal(await readFile(join(store, out), 'utf8'), `ca-${nonce}\n`)
    assert.equal(existsSync(marker) ? (await readFile(marker, 'utf8')).split('\n').filter(Boolean).length : 0, 1, 'the builder ran only for the original build')
    assert.ok(upstream.requests.some(r => r.startsWith('GET /realisations/sha256:')), 'the realisation came from the upstream')
  })

  test('the NAR listing nix copy wrote is served as it is', async () => {
    const hashPart = logged.slice('/nix/store/'.length, '/nix/store/'.length + 32)
    const res = await fetch(`${narswarm.url}/${hashPart}.ls`)
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), JSON.parse(await readFile(join(nix.dir, 'cache', `${hashPart}.ls`), 'utf8')))
  })
})
