/**
 * The package as a user gets it: `npm pack` of this checkout (its prepack builds dist/),
 * then `npm install -g` of the tarball into a temporary prefix — every install script of every
 * dependency runs, as for a consumer, whom the `overrides` of package.json do not reach — then
 * the installed `narswarm version`, a short `serve` stopped with SIGTERM, and on a Node older than
 * 24 (the system's /usr/bin/node, if it is one) the one-line message. The npm cache is reused, so
 * only the first run on a machine downloads the dependencies.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir } from '../helpers/temp.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
/** npm and the installed command run with this Node (24) first on PATH. */
const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, npm_config_update_notifier: 'false' }
const npmSkip = spawnSync('npm', ['--version'], { env }).error === undefined ? false : 'npm is not installed'

function run (command: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 })
  assert.equal(r.status, 0, `${command} ${args.join(' ')} failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-6000)}`)
  return r
}

test('npm pack, npm install -g into a fresh prefix, then the installed narswarm runs', { skip: npmSkip, timeout: 600_000 }, async (t) => {
  // prepack builds dist/ in the checkout; it goes again unless it was there before.
  const work = tempDir('narswarm-pack-')
  const dist = join(ROOT, 'dist')
  if (!existsSync(dist)) t.after(() => rmSync(dist, { recursive: true, force: true }))
  run('npm', ['pack', '--pack-destination', work], ROOT)
  const tarball = readdirSync(work).find(f => /^narswarm-.*\.tgz$/.test(f))
  assert.ok(tarball !== undefined, readdirSync(work).join(' '))

  const prefix = join(work, 'prefix')
  run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(work, tarball)], work)
  const bin = join(prefix, 'bin', 'narswarm')

  assert.equal(run(bin, ['version'], work).stdout.trim(), pkg.version)

  // The bundled WebAssembly xz decoder is in the package and loads from where npm put it.
  const nixModule = join(prefix, 'lib', 'node_modules', 'narswarm', 'dist', 'nix', 'index.js')
  const xzCheck = `const { compress, decompress } = await import(${JSON.stringify(nixModule)});
    const data = Buffer.from('narswarm '.repeat(10000)); const parts = []; const packed = [];
    const from = async function * (chunks) { yield * chunks };
    for await (const c of compress('xz', from([data]), { engine: 'library' })) packed.push(c);
    for await (const c of decompress('xz', from(packed), { engine: 'library' })) parts.push(c);
    if (!Buffer.concat(parts).equals(data)) throw new Error('xz round trip differs');`
  run(process.execPath, ['--input-type=module', '-e', xzCheck], work)

  const state = join(work, 'state')
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--state-dir', state, '--peer-listen', 'off', '--discovery', 'off', '--upstream', 'http://127.0.0.1:1?require-sigs=false'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  await new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
      if (stderr.includes('"narswarm substituter listening"')) resolve()
    })
    child.once('exit', code => reject(new Error(`narswarm serve exited with ${code}: ${stderr}`)))
  })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  child.kill('SIGTERM')
  assert.equal(await exited, 0, stderr)

  const oldNode = '/usr/bin/node'
  const version = spawnSync(oldNode, ['--version'], { encoding: 'utf8' })
  const major = version.error === undefined ? Number(/^v(\d+)/.exec(version.stdout)?.[1]) : NaN
  await t.test('on an older Node: one line saying which Node it needs, exit 1', { skip: Number.isNaN(major) ? `${oldNode} is not there` : major >= 24 ? `${oldNode} is Node ${major}, not older than 24` : false }, () => {
    const r = spawnSync(oldNode, [join(prefix, 'lib', 'node_modules', 'narswarm', 'bin', 'narswarm.js'), 'version'], { encoding: 'utf8' })
    assert.equal(r.status, 1, r.stderr)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^narswarm needs Node\.js 24 or later \(>=24\); this is Node\.js \d+\.\d+\.\d+ at .+\n$/)
    assert.equal(r.stderr.split('\n').length, 2, 'one line')
  })
})
