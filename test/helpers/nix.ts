/**
 * Runs the real Nix client (Debian's nix-bin 2.8 or newer) in an isolated configuration: its own
 * nix.conf (no sandbox, no build users, nix-command on, no substituters) and its own cache
 * directory, so no test sees another's narinfo disk cache. Tests that need Nix call `nixOrSkip`
 * and are skipped with a printed reason where it is not installed.
 */
import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

let available: string | false | undefined

/** The Nix version string, or false when no usable `nix-store` is on PATH. */
export function nixVersion (): string | false {
  if (available === undefined) {
    const r = spawnSync('nix-store', ['--version'], { encoding: 'utf8' })
    available = r.status === 0 ? r.stdout.trim() : false
  }
  return available
}

/** For `test(name, { skip: nixSkip() }, …)`: false when Nix is here, else the reason. */
export function nixSkip (): string | false {
  return nixVersion() === false ? 'the Nix client (nix-store) is not installed: apt-get install nix-bin' : false
}

export interface NixEnv {
  /** Directory holding nix.conf, the cache dir and anything else the test puts there. */
  dir: string
  env: NodeJS.ProcessEnv
  /** Runs a Nix command (`nix`, `nix-store`, `nix-build`…) and returns its stdout. Throws with stderr on failure. */
  run: (cmd: string, args: string[], opts?: { input?: string, env?: NodeJS.ProcessEnv }) => Promise<string>
  /** Runs a Nix command and returns its exit status and output without throwing. */
  tryRun: (cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv }) => Promise<{ code: number, stdout: string, stderr: string }>
  cleanup: () => Promise<void>
}

export async function makeNixEnv (extraConf = ''): Promise<NixEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-nix-'))
  await mkdir(join(dir, 'conf'))
  await writeFile(join(dir, 'conf', 'nix.conf'), [
    'sandbox = false',
    'build-users-group =',
    'experimental-features = nix-command',
    'substituters =',
    'require-sigs = true',
    extraConf, ''
  ].join('\n'))
  const env = {
    ...process.env,
    NIX_CONF_DIR: join(dir, 'conf'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    NIX_REMOTE: '',
    NIX_PATH: ''
  }
  const tryRun = async (cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}) => {
    try {
      const r = await execFileAsync(cmd, args, { env: { ...env, ...opts.env }, maxBuffer: 64 << 20 })
      return { code: 0, stdout: r.stdout, stderr: r.stderr }
    } catch (err: any) {
      return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(err) }
    }
  }
  const run = async (cmd: string, args: string[], opts: { input?: string, env?: NodeJS.ProcessEnv } = {}) => {
    if (opts.input !== undefined) {
      const r = spawnSync(cmd, args, { env: { ...env, ...opts.env }, input: opts.input, encoding: 'utf8', maxBuffer: 64 << 20 })
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`)
      return r.stdout
    }
    const r = await tryRun(cmd, args, opts)
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
    return r.stdout
  }
  return { dir, env, run, tryRun, cleanup: () => rm(dir, { recursive: true, force: true }) }
}
