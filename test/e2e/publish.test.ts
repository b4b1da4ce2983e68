/**
 * `narswarm publish`, `keys` and `index` end to end with the real Nix: a closure built here is
 * published into a `file://` backend and a `folder:` index with a key made by `narswarm keys`; a
 * second narswarm, its upstream down, serves it from there to a fresh store that trusts only that
 * key. The same from a binary cache `nix copy` wrote; from one served over HTTP with
 * `--narinfo-only` (no NAR fetched, the records pointing at the cache's files) and with the path
 * filters; a run killed with SIGKILL and resumed; a path altered in the store refused; the index
 * exported as static files and read over HTTP.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { buildClosure, copyTo, hashPartOf, type Closure } from '../helpers/closure.ts'
import { runNarswarm, startNarswarm } from '../helpers/narswarm.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { freePort } from '../helpers/net.ts'
import { parseEntry } from '../../src/mapper/folder.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { verifyNarInfo } from '../../src/nix/signature.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'

describe('narswarm publish with the real Nix', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let key: { file: string, public: string }
  let deadUpstream: string
  let run = 0

  before(async () => {
    nix = await makeNixEnv()
    closure = await buildClosure(nix, { withBig: true })
    const file = join(nix.dir, 'publish.secret')
    const made = await runNarswarm(['keys', 'generate', '--name', 'narswarm-publish-test-1', '--secret-file', file])
    assert.equal(made.code, 0, made.stderr)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    const shown = await runNarswarm(['keys', 'public', file])
    assert.equal(shown.stdout, made.stdout, 'keys public prints the key generate printed')
    // The key works for Nix itself: its public half as Nix derives it.
    assert.equal((await nix.run('nix', ['key', 'convert-secret-to-public'], { input: await readFile(file, 'utf8') })).trim(), made.stdout.trim())
    key = { file, public: made.stdout.trim() }
    deadUpstream = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${closure.publicKey}`
  })
  after(async () => { await nix?.cleanup() })

  const publish = async (args: string[]) => await runNarswarm(['publish', '--state-dir', join(nix.dir, `pstate-${run++}`), '--log-level', 'warn', '--sign-key', key.file, ...args])

  /** Nix substitutes the closure from a narswarm whose upstream is down, trusting only `trust` (our key). */
  async function substitute (args: string[], trust = key.public): Promise<void> {
    const narswarm = await startNarswarm(['--upstream', deadUpstream, '--trusted-public-keys', trust, ...args])
    const store = `local?root=${join(nix.dir, `store-${run++}`)}`
    try {
      await nix.run('nix-store', ['--store', store, '--realise', closure.top, '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', trust])
      await nix.run('nix', ['store', 'verify', '--store', store, '--trusted-public-keys', trust, '-r', closure.top])
      const got = JSON.parse(await nix.run('nix', ['path-info', '--store', store, '--json', '-r', closure.top])) as Array<{ path: string }>
      assert.deepEqual(got.map(p => p.path).sort(), closure.paths)
    } finally {
      await narswarm.stop()
    }
  }

  test('--closure-of from the local store into file:// + folder:, served with the upstream down', async () => {
    const nars = join(nix.dir, 'nars-local')
    const index = join(nix.dir, 'index-local')
    const r = await publish(['--closure-of', closure.top, '--backend', `file://${nars}`, '--mapper', `folder://${index}`])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`^published ${closure.paths.length}, skipped 0`))
    // As the README writes it: the `result` link nix-build leaves, not the store path.
    const result = join(nix.dir, 'result')
    await symlink(closure.top, result)
    const again = await publish(['--closure-of', result, '--backend', `file://${nars}`, '--mapper', `folder://${index}`])
    assert.match(again.stdout, new RegExp(`^published 0, skipped ${closure.paths.length}`), 'a re-run skips everything')
    await substitute(['--mapper', `folder://${index}`, '--backend', `file://${nars}`])
  })

  test('--from-cache of a cache nix copy wrote, into file:// + sqlite:', async () => {
    const cache = join(nix.dir, 'copied')
    await copyTo(nix, closure, cache, 'xz')
    const nars = join(nix.dir, 'nars-cache')
    const db = join(nix.dir, 'from-cache.sqlite')
    const r = await publish(['--from-cache', `file://${cache}?trusted-public-keys=${closure.publicKey}`, '--closure-of', closure.top,
      '--backend', `file://${nars}?compression=zstd`, '--mapper', `sqlite://${db}`])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`^published ${closure.paths.length},`))
    await substitute(['--mapper', `sqlite://${db}`, '--backend', `file://${nars}`])
    // The cache's own signature, which verified, is kept next to ours.
    const index = await openMapper(`sqlite://${db}`, { log: silentLogger(), stateDir: nix.dir })
    try {
      const kept = NarInfo.parse((await index.narInfo!(hashPartOf(closure.top)))!)
      assert.deepEqual(verifyNarInfo(kept, [closure.publicKey, key.public]).validKeyNames.sort(), [closure.publicKey.split(':')[0]!, 'narswarm-publish-test-1'].sort())
    } finally {
      await index.close?.()
    }
    // A cache that is not signed by the key it is said to be signed by gives nothing.
    const refused = await publish(['--from-cache', `file://${cache}?trusted-public-keys=${key.public}`, '--backend', `file://${nars}`, '--mapper', `sqlite://${db}`])
    assert.equal(refused.code, 1)
    assert.match(refused.stdout, /failed \w{32}: narinfo refused: no valid signature/)
  })

  test('--from-cache over HTTP with --narinfo-only records where the NARs are without fetching one; the filters choose the paths', async () => {
    const cache = join(nix.dir, 'served')
    await copyTo(nix, closure, cache, 'zstd')
    const server = await startCacheServer(cache)
    try {
      const db = join(nix.dir, 'narinfo-only.sqlite')
      const r = await publish(['--from-cache', `${server.url}?trusted-public-keys=${closure.publicKey}`, '--closure-of', closure.top, '--narinfo-only', '--mapper', `sqlite://${db}`])
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, new RegExp(`^published ${closure.paths.length},`))
      assert.deepEqual(server.requests.filter(q => q.startsWith('GET /nar/')), [], 'no NAR was fetched')
      // The records point at the cache's own NAR files, and carry its own signed narinfos.
      await substitute(['--mapper', `sqlite://${db}`, '--backend', `mirror+${server.url}/,http://127.0.0.1:${await freePort()}/`], closure.publicKey)
      assert.ok(server.requests.some(q => q.startsWith('GET /nar/')), 'the NARs came from the cache, through the records')
    } finally {
      await server.close()
    }

    const chosen = async (filters: string[]): Promise<string[]> => {
      const db = join(nix.dir, `filtered-${run++}.sqlite`)
      const r = await publish(['--from-cache', `file://${cache}?trusted-public-keys=${closure.publicKey}`, '--closure-of', closure.top, '--narinfo-only', '--mapper', `sqlite://${db}`, ...filters])
      assert.equal(r.code, 0, r.stderr)
      const index = await openMapper(`sqlite://${db}`, { log: silentLogger(), stateDir: nix.dir })
      try {
        const recorded: string[] = []
        for (const path of closure.paths) if (await index.narInfo!(hashPartOf(path)) !== undefined) recorded.push(path)
        return recorded
      } finally {
        await index.close?.()
      }
    }
    const others = closure.paths.filter(p => p !== closure.big)
    assert.deepEqual(await chosen(['--max-size', '50M']), others, '--max-size leaves out the 100 MiB NAR')
    assert.deepEqual(await chosen(['--exclude', 'bi?']), others, '--exclude leaves out what matches')
    assert.deepEqual(await chosen(['--include', 't*', '--exclude', 'tr*']), [closure.top], '--include keeps only what matches, less what --exclude leaves out')
  })

  test('killed with SIGKILL mid-run: no half-written record, and a re-run completes it', async () => {
    const nars = join(nix.dir, 'nars-kill')
    const index = join(nix.dir, 'index-kill')
    const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', main, 'publish', '--closure-of', closure.top, '--jobs', '1',
      '--state-dir', join(nix.dir, 'kill-state'), '--sign-key', key.file, '--backend', `file://${nars}?compression=xz`, '--mapper', `folder://${index}`], { stdio: 'ignore' })
    // Killed as soon as one record is complete: with xz the 100 MiB path takes seconds.
    const exited = new Promise(resolve => child.once('exit', resolve))
    const entries = async (): Promise<string[]> => {
      const found: string[] = []
      for (const c of (await readdir(index).catch(() => [])).filter(n => n.length === 1)) {
        // A kill may leave temporary files next to the records; they are never read as records.
        for (const f of (await readdir(join(index, c))).filter(n => /^[0-9a-f]{64}\.yaml$/.test(n))) found.push(join(index, c, f))
      }
      return found
    }
    for (let i = 0; i < 3000 && (await entries()).length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    child.kill('SIGKILL')
    await exited
    const recorded = await entries()
    assert.ok(recorded.length > 0 && recorded.length < closure.paths.length, `killed mid-run (${recorded.length} of ${closure.paths.length} recorded)`)
    // Every record points at a whole NAR file.
    for (const file of recorded) {
      const entry = parseEntry(await readFile(file, 'utf8'), file)
      for (const l of entry.locators) assert.equal((await stat(fileURLToPath(l.url))).size, l.fileSize)
    }
    const resumed = await publish(['--closure-of', closure.top, '--backend', `file://${nars}?compression=xz`, '--mapper', `folder://${index}`])
    assert.equal(resumed.code, 0, resumed.stderr)
    assert.match(resumed.stdout, new RegExp(`^published ${closure.paths.length - recorded.length}, skipped ${recorded.length}`))
    await substitute(['--mapper', `folder://${index}`, '--backend', `file://${nars}`])
  })

  test('a path altered in the store is refused, not published; other paths and bad input are reported apart', async () => {
    const file = join(nix.dir, 'victim.nix')
    await writeFile(file, `builtins.derivation { name = "victim"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo ${Date.now()}-${Math.random()} > $out" ]; }`)
    const victim = (await nix.run('nix-build', [file, '--no-out-link'])).trim()
    await chmod(victim, 0o644)
    await writeFile(victim, 'altered after registration\n')
    const nars = join(nix.dir, 'nars-victim')
    const db = join(nix.dir, 'victim.sqlite')
    const r = await publish([victim, closure.note, '/nix/store/00000000000000000000000000000000-missing', '--backend', `file://${nars}`, '--mapper', `sqlite://${db}`])
    assert.equal(r.code, 1)
    assert.match(r.stdout, /^published 1, skipped 0 \(already published\), excluded 0, failed 2/)
    assert.match(r.stdout, new RegExp(`failed ${victim}: NAR of ${victim}: (size|hash) mismatch`))
    assert.match(r.stdout, /failed \/nix\/store\/0{32}-missing: not a valid path/)
    assert.deepEqual((await readdir(join(nars, 'nar'))).length, 1, 'only the good path was stored')
    const missingKey = await publish([closure.note, '--sign-key', join(nix.dir, 'no-such.key'), '--backend', `file://${nars}`, '--mapper', `sqlite://${db}`])
    assert.equal(missingKey.code, 1)
    assert.match(missingKey.stderr, /--sign-key .*no-such\.key: ENOENT/)
    await nix.tryRun('nix-store', ['--delete', victim])
  })

  test('index export as static files, read over HTTP by the http+ mapper; import checks the signed manifest', async () => {
    const nars = join(nix.dir, 'nars-export')
    const state = join(nix.dir, 'export-state')
    const r = await runNarswarm(['publish', '--closure-of', closure.top, '--state-dir', state, '--log-level', 'warn', '--sign-key', key.file, '--backend', `file://${nars}`])
    assert.equal(r.code, 0, r.stderr)
    const out = join(nix.dir, 'export')
    const exported = await runNarswarm(['index', 'export', out, '--state-dir', state, '--sign-key', key.file])
    assert.equal(exported.code, 0, exported.stderr)
    assert.match(exported.stdout, new RegExp(`exported ${closure.paths.length} NARs, ${closure.paths.length} narinfos`))
    const web = await startCacheServer(out)
    try {
      await substitute(['--mapper', `http+${web.url}/`, '--backend', `file://${nars}`])
      assert.ok(web.requests.some(q => q.startsWith('GET /narswarm/v1/locators/')))
    } finally {
      await web.close()
    }
    const importState = join(nix.dir, 'import-state')
    const unsigned = await runNarswarm(['index', 'import', out, '--state-dir', importState, '--trusted-public-keys', closure.publicKey])
    assert.equal(unsigned.code, 1)
    assert.match(unsigned.stderr, /not signed by any trusted key/)
    const imported = await runNarswarm(['index', 'import', out, '--state-dir', importState, '--trusted-public-keys', key.public])
    assert.equal(imported.code, 0, imported.stderr)
    assert.match(imported.stdout, new RegExp(`imported ${closure.paths.length} narinfos, ${closure.paths.length} locators .*signed by narswarm-publish-test-1`))
    // One altered locator file: the import refuses before recording anything.
    const locators = join(out, 'narswarm', 'v1', 'locators')
    const first = (await readdir(locators))[0]!
    await writeFile(join(locators, first), '{"locators":[{"url":"https://evil.example/x","compression":"none"}]}\n')
    const tampered = await runNarswarm(['index', 'import', out, '--state-dir', join(nix.dir, 'import-2'), '--trusted-public-keys', key.public])
    assert.equal(tampered.code, 1)
    assert.match(tampered.stderr, /does not match its checksum/)
  })
})
