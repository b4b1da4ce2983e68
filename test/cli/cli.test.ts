/**
 * The command line as a user meets it: one parser and one error path for every command (one line,
 * exit 2, a "did you mean"), help built from the settings table and the plug-ins' summaries, the
 * bare `narswarm --flag` running `serve`, and the completion script.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseCommandLine } from '../../src/cli/args.ts'
import { CACHE_SUBCOMMANDS } from '../../src/cli/cache-command.ts'
import { COMMANDS } from '../../src/cli/commands.ts'
import { completionScript } from '../../src/cli/completion.ts'
import { LIST_SETTINGS, loadConfig, SETTINGS } from '../../src/cli/config.ts'
import { mainHelp } from '../../src/cli/help.ts'
import { pluginSummaries } from '../../src/registry.ts'
import { runNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'

const usage = (fn: () => unknown, message: RegExp): void => {
  assert.throws(fn, (err: Error) => err.name === 'UsageError' && message.test(err.message) && !err.message.includes('\n'), String(message))
}

describe('command line', () => {
  it('parse errors are one line with a suggestion', () => {
    const options = { jobs: { type: 'string', help: '' }, 'from-cache': { type: 'string', help: '' }, all: { type: 'boolean', help: '' } } as const
    usage(() => parseCommandLine('publish', ['--jbos', '3'], options), /^publish: unknown option '--jbos' \(did you mean '--jobs'\?\)$/)
    usage(() => parseCommandLine('publish', ['--from-cahce=x'], options), /did you mean '--from-cache'/)
    usage(() => parseCommandLine('publish', ['--zzzzzz'], options), /^publish: unknown option '--zzzzzz'$/)
    usage(() => parseCommandLine('publish', ['--jobs'], options), /option '--jobs' needs a value/)
    usage(() => parseCommandLine('publish', ['--all=yes'], options), /option '--all' takes no value/)
    usage(() => parseCommandLine('keys public', ['a', 'b'], {}, 1), /unexpected argument 'b'/)
    const parsed = parseCommandLine('x', ['--jobs', '3', 'p'], options, 1)
    assert.deepEqual({ ...parsed.values }, { jobs: '3' })
    assert.deepEqual(parsed.positionals, ['p'])
  })

  it('unknown TOML keys and NARSWARM_* variables get a suggestion', async () => {
    assert.throws(() => loadConfig({ flags: {}, env: { NARSWARM_LISTN: 'x' } }), /unknown environment variable NARSWARM_LISTN \(did you mean NARSWARM_LISTEN\?\)/)
    assert.throws(() => loadConfig({ flags: {}, env: { NARSWARM_UPSTREAMS: 'x' } }), /did you mean NARSWARM_UPSTREAM\?/)
    const { writeFile, rm, mkdtemp } = await import('node:fs/promises')
    const { join } = await import('node:path')
    const { tmpdir } = await import('node:os')
    const dir = await mkdtemp(join(tmpdir(), 'narswarm-cli-'))
    try {
      await writeFile(join(dir, 'c.toml'), 'narinfo-postive-ttl = "1d"\n')
      assert.throws(() => loadConfig({ flags: { config: join(dir, 'c.toml') }, env: {} }), /unknown key 'narinfo-postive-ttl' \(did you mean 'narinfo-positive-ttl'\?\)/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('help lists every registered scheme with its own summary, every setting, aligned', async () => {
    const help = await mainHelp(COMMANDS, '0.0.0')
    const { mappers, backends } = await pluginSummaries()
    for (const p of [...mappers, ...backends]) {
      assert.match(help, new RegExp(`^ {2}${p.scheme}: +\\S`, 'm'), `scheme ${p.scheme} in the help`)
      assert.ok(help.replace(/\s+/g, ' ').includes(p.summary.replace(/\s+/g, ' ')), `summary of ${p.scheme}`)
    }
    for (const key of [...Object.keys(SETTINGS), ...LIST_SETTINGS]) assert.match(help, new RegExp(`^ {2}--${key} `, 'm'), `--${key} in the help`)
    for (const c of COMMANDS) assert.match(help, new RegExp(`^ {2}${c.name}\\b`, 'm'))
    // An option's name is followed by two spaces and its text, or stands alone on its line.
    for (const line of help.split('\n').filter(l => /^ {2}--/.test(l))) {
      assert.match(line, /^ {2}--[a-z-]+( [A-Z:]+)?( {2,}\S.*)?$/, `aligned: ${line}`)
    }
    assert.ok(help.split('\n').every(l => l.length <= 100), 'no line over 100 columns')
  })

  it('bash completion from the command table: commands, subcommands, options', { skip: spawnSync('bash', ['--version']).status === 0 ? false : 'bash is not installed' }, () => {
    const script = completionScript('bash', COMMANDS)
    const complete = (...words: string[]): string[] => {
      const r = spawnSync('bash', ['-c', `${script}\nCOMP_WORDS=(${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _narswarm; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' })
      assert.equal(r.status, 0, r.stderr)
      return r.stdout.split('\n').filter(Boolean)
    }
    assert.deepEqual(complete('narswarm', 'pub'), ['publish'])
    assert.deepEqual(complete('narswarm', 'keys', 'g'), ['generate'])
    assert.deepEqual(complete('narswarm', 'publish', '--paths-f'), ['--paths-from'])
    assert.deepEqual(complete('narswarm', '--state-dir', '/tmp', 'publish', '--narinfo'), ['--narinfo-only'])
    assert.deepEqual(complete('narswarm', 'keys', 'generate', '--secret'), ['--secret-file'])
    assert.ok(complete('narswarm', '--narinfo-pos').includes('--narinfo-positive-ttl'), 'serve options at the top level')
    const zsh = completionScript('zsh', COMMANDS)
    assert.match(zsh, /^#compdef narswarm\n/)
    if (spawnSync('zsh', ['--version']).status === 0) assert.equal(spawnSync('zsh', ['-n'], { input: zsh }).status, 0)
  })

  it('the real command: a reader that stops early (`narswarm help | head -1`) ends it quietly, status 0', async () => {
    // Our end of its output pipe is closed before it writes: its write fails with EPIPE.
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)), 'help'], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.destroy()
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const code = await new Promise<number | null>(resolve => child.once('close', resolve))
    assert.equal(stderr, '')
    assert.equal(code, 0)
  })

  it('the real command: usage errors are one line and exit 2, no stack; bare flags run serve', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--lisen', '127.0.0.1:0'], /^narswarm: serve: unknown option '--lisen' \(did you mean '--listen'\?\)\n$/],
      [['pubish'], /^narswarm: unknown command 'pubish' \(did you mean 'publish'\?\)/],
      [['keys', 'generate', '--nmae', 'x'], /^narswarm: keys generate: unknown option '--nmae' \(did you mean '--name'\?\)\n$/],
      [['index', 'export', '--sign-kye', 'k', 'dir'], /did you mean '--sign-key'/],
      [['peers', '--jsn'], /^narswarm: peers: unknown option '--jsn' \(did you mean '--json'\?\)\n$/],
      [['publish', '--narinfo-only', '/nix/store/x'], /^narswarm: publish: --narinfo-only needs --from-cache/]
    ]
    for (const [args, message] of cases) {
      const r = await runNarswarm(args)
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`)
    }
    // `narswarm --priority x` is `narswarm serve --priority x`: the setting is checked as serve's.
    const bare = await runNarswarm(['--priority', 'high'])
    assert.equal(bare.code, 1)
    assert.match(bare.stderr, /^narswarm: configuration error: priority must be an integer/)
    const help = await runNarswarm(['publish', '--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--paths-from FILE {2,}read store paths from FILE/)
    // `help` in place of a subcommand is `--help`, read from the same table.
    const cacheHelp = await runNarswarm(['cache', 'help'])
    assert.equal(cacheHelp.code, 0)
    for (const sub of Object.keys(CACHE_SUBCOMMANDS)) assert.match(cacheHelp.stdout, new RegExp(`^narswarm cache ${sub}\\b`, 'm'))
    const importHelp = await runNarswarm(['cache', 'help', 'import'])
    assert.equal(importHelp.code, 0)
    assert.match(importHelp.stdout, /^Usage: narswarm cache import .*\n[^]*--trusted-public-keys KEY/)
    // `cache pin` takes its paths from --paths-from too (an empty store has none of them).
    const { writeFile } = await import('node:fs/promises')
    const { join } = await import('node:path')
    const dir = tempDir()
    const missing = '/nix/store/00000000000000000000000000000000-absent'
    await writeFile(join(dir, 'paths'), `# to keep\n${missing}/bin/tool\n`)
    const pin = await runNarswarm(['cache', 'pin', '--paths-from', join(dir, 'paths'), '--state-dir', join(dir, 'state')])
    assert.equal(pin.code, 1, pin.stderr)
    assert.match(pin.stdout, new RegExp(`^not in the chunk store: ${missing}$[^]*^pinned 0 of 1 paths$`, 'm'))
  })
})
