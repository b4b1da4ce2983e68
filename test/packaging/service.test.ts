/**
 * The service definitions: every .nix file parses (`nix-instantiate --parse`); the settings the
 * NixOS module and the README's example use are narswarm's own configuration keys; the plain
 * systemd unit passes `systemd-analyze verify`, sets what the module sets (the hardening is
 * written twice, once in each language), and its ExecStart, with the installed paths replaced by
 * this checkout's, starts narswarm (which then stops on SIGTERM).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LIST_SETTINGS, SETTINGS } from '../../src/cli/config.ts'
import { tempDir } from '../helpers/temp.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const UNIT = readFileSync(join(ROOT, 'contrib/narswarm.service'), 'utf8')
const MODULE = readFileSync(join(ROOT, 'nix/module.nix'), 'utf8')
const KNOWN = new Set([...Object.keys(SETTINGS), ...LIST_SETTINGS])
/** The installed paths in the unit, and what they are in a test. */
const INSTALLED_BIN = '/usr/local/bin/narswarm'
const INSTALLED_CONFIG = '/etc/narswarm/narswarm.toml'

function nixFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(e => {
    if (e.name === 'node_modules' || e.name.startsWith('.')) return []
    const path = join(dir, e.name)
    return e.isDirectory() ? nixFiles(path) : e.name.endsWith('.nix') ? [path] : []
  })
}

const noNix = spawnSync('nix-instantiate', ['--version']).error === undefined ? false : 'nix-instantiate is not installed'

test('every .nix file parses', { skip: noNix }, () => {
  const files = nixFiles(ROOT)
  assert.ok(files.some(f => f.endsWith('flake.nix')) && files.some(f => f.endsWith('module.nix')) && files.some(f => f.endsWith('package.nix')), files.join(' '))
  for (const file of files) {
    const r = spawnSync('nix-instantiate', ['--parse', file], { encoding: 'utf8' })
    assert.equal(r.status, 0, `${file}: ${r.stderr}`)
  }
})

test('the settings the NixOS module and the README use are narswarm configuration keys', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const used = new Set<string>()
  for (const text of [MODULE, readme]) {
    // `cfg.settings.KEY`, `narswarm.settings.KEY`, and the keys of `settings = { KEY = …; }` blocks.
    for (const m of text.matchAll(/(?:cfg|narswarm)\.settings\.([a-z][a-z0-9-]*)/g)) used.add(m[1]!)
    for (const block of text.matchAll(/settings = \{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}/g)) {
      for (const m of block[1]!.matchAll(/^\s*([a-z][a-z0-9-]*)\s*=/gm)) used.add(m[1]!)
    }
  }
  assert.ok(used.has('state-dir') && used.has('backend') && used.has('listen'), [...used].join(' '))
  for (const key of used) assert.ok(KNOWN.has(key), `'${key}' is not a narswarm setting (known: ${[...KNOWN].join(', ')})`)
  // The module's idea of the defaults it reads is narswarm's.
  for (const key of ['listen', 'peer-listen', 'discovery']) assert.ok(MODULE.includes(`cfg.settings.${key} or "${String(SETTINGS[key]!.default)}"`), `the module falls back to the default ${key}`)
  for (const m of UNIT.matchAll(/^Environment=NARSWARM_([A-Z_]+)=/gm)) assert.ok(KNOWN.has(m[1]!.toLowerCase().replaceAll('_', '-')), m[0])
})

/** The [Service] directives of the unit, each with its values (a repeated directive adds to them). */
function unitDirectives (): Map<string, string[]> {
  const section = /^\[Service\]\n([\s\S]*?)^\[/m.exec(UNIT)![1]!
  const directives = new Map<string, string[]>()
  for (const m of section.matchAll(/^([A-Za-z]+)=(.*)$/gm)) directives.set(m[1]!, [...directives.get(m[1]!) ?? [], ...m[2]!.split(/\s+/).filter(v => v !== '')])
  return directives
}

/** The module's `serviceConfig`, its Nix values written as the unit writes them. */
function moduleDirectives (): Map<string, string[]> {
  const block = /serviceConfig = \{\n([\s\S]*?)\n {6}\};/.exec(MODULE)![1]!
  const directives = new Map<string, string[]>()
  for (const m of block.matchAll(/^\s*([A-Za-z]+) = (.*);$/gm)) {
    const value = m[2]!
    directives.set(m[1]!, value === 'true' ? ['yes'] : value === 'false' ? ['no'] : value.startsWith('[')
      ? [...value.matchAll(/"([^"]*)"/g)].map(v => v[1]!)
      : [value.replace(/^"(.*)"$/, '$1')].filter(v => v !== ''))
  }
  return directives
}

test('the unit and the NixOS module run the service alike', () => {
  const unit = unitDirectives()
  const module = moduleDirectives()
  assert.ok(unit.has('DynamicUser') && module.has('SystemCallFilter'), 'both were read')
  // What differs by nature: the command line and how the configuration and secrets get there.
  const own = { unit: ['ExecStart', 'Environment', 'ConfigurationDirectory'], module: ['ExecStart', 'LoadCredential', 'MemoryDenyWriteExecute'] }
  for (const [key, values] of unit) if (!own.unit.includes(key)) assert.deepEqual(module.get(key), values, `${key} in nix/module.nix`)
  for (const key of module.keys()) if (!own.module.includes(key)) assert.ok(unit.has(key), `${key} in contrib/narswarm.service`)
})

/** The unit with the installed paths replaced by this checkout's and a test's. */
function localUnit (config: string): string {
  assert.ok(UNIT.includes(`ExecStart=${INSTALLED_BIN} `) && UNIT.includes(INSTALLED_CONFIG), 'the unit names the installed paths')
  return UNIT.replaceAll(INSTALLED_BIN, join(ROOT, 'bin/narswarm.js')).replaceAll(INSTALLED_CONFIG, config)
}

const noSystemd = spawnSync('systemd-analyze', ['--version']).error === undefined ? false : 'systemd-analyze is not installed'

test('contrib/narswarm.service passes systemd-analyze verify', { skip: noSystemd }, () => {
  const dir = tempDir()
  const config = join(dir, 'narswarm.toml')
  writeFileSync(config, '')
  const unit = join(dir, 'narswarm.service')
  writeFileSync(unit, localUnit(config))
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' })
  // verify exits 0 for directives it could not parse, but says so: any message is a failure.
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stderr.trim(), '', r.stderr)
})

test("the unit's ExecStart starts narswarm, which stops on SIGTERM", { timeout: 60_000 }, async () => {
  const dir = tempDir()
  const config = join(dir, 'narswarm.toml')
  writeFileSync(config, `listen = "127.0.0.1:0"\nstate-dir = "${join(dir, 'state')}"\nupstream = ["http://127.0.0.1:1?require-sigs=false"]\nlog-level = "info"\npeer-listen = "127.0.0.1:0"\ndiscovery = "off"\n`)
  const unit = localUnit(config)
  const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!.split(/\s+/)
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` }
  for (const m of unit.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)) env[m[1]!] = m[1] === 'XDG_DATA_HOME' ? join(dir, 'data') : m[2]
  const child = spawn(execStart[0]!, execStart.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  const listening = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
      if (stderr.includes('"narswarm substituter listening"')) resolve()
    })
    child.once('exit', code => reject(new Error(`narswarm exited with ${code}: ${stderr}`)))
  })
  await listening
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  child.kill('SIGTERM')
  assert.equal(await exited, 0, stderr)
  assert.match(stderr, /"narswarm substituter stopped"/)
})
