/**
 * The command table: every `narswarm` subcommand, its one-line summary, its options and its
 * entry point. `narswarm help`, each command's `--help`, the shell completion and the dispatch in
 * `main.ts` are all read from it, so a command exists in all of them or in none.
 *
 * Adding a subcommand is one entry here. Put the command in its own file
 * `src/cli/<name>-command.ts`, exporting `async function <name>Command (argv: string[]): Promise<number>`
 * and, ideally, its option table, then add:
 *
 *   { name: 'cache', usage: 'pin|import|… [options]', summary: 'the local chunk store',
 *     subcommands: CACHE_SUBCOMMANDS, run: cacheCommand },
 *
 * Inside, parse with `parseCommandLine('cache pin', argv, OPTIONS, maxPositionals)` from
 * `args.ts`: it throws a UsageError (one line, exit 2, with "did you mean") for anything wrong.
 * `--help`, and `help` in place of a subcommand, never reach `run`: main prints the help from this
 * table. A command that takes store paths offers `--paths-from FILE` (`-` for standard input)
 * through `readPathList` (paths.ts).
 * Throw UsageError for a wrong command line, ConfigError for a wrong setting; main prints either
 * as one line.
 */
import type { OptionTable } from './args.ts'
import { completionScript } from './completion.ts'
import { INDEX_SUBCOMMANDS, indexCommand } from './index-command.ts'
import { KEYS_SUBCOMMANDS, keysCommand } from './keys.ts'
import { PUBLISH_DESCRIPTION, PUBLISH_OPTIONS, publishCommand } from './publish.ts'
import { SERVE_OPTIONS, serveCommand } from './serve-command.ts'
import { CACHE_DESCRIPTION, CACHE_SUBCOMMANDS, cacheCommand } from './cache-command.ts'
import { PEERS_DESCRIPTION, PEERS_OPTIONS, peersCommand } from './peers-command.ts'
import { VERSION } from './version.ts'
import { UsageError } from '../errors.ts'
import { mainHelp, commandHelp } from './help.ts'

export interface Subcommand {
  /** What follows `narswarm <command> <subcommand>`. */
  usage: string
  summary: string
  options?: OptionTable
}

export interface Command {
  name: string
  /** What follows `narswarm <name>` in usage lines, e.g. '[options] [PATHS…]'. */
  usage: string
  /** One line for `narswarm help`. */
  summary: string
  /** A paragraph for `narswarm <name> --help`. */
  description?: string
  options?: OptionTable
  subcommands?: Record<string, Subcommand>
  /** Talks to remote servers: the machine's TLS certificates are trusted first (tls-trust.ts). */
  remote?: true
  run: (argv: string[]) => Promise<number>
}

export const COMMANDS: Command[] = [
  { name: 'serve', usage: '[options]', summary: 'run the substituter (the default command: `narswarm --listen X` is `narswarm serve --listen X`)', options: SERVE_OPTIONS, remote: true, run: serveCommand },
  { name: 'publish', usage: '[options] [PATHS…]', summary: 'put store paths into the backends and record them, signed, in the index', description: PUBLISH_DESCRIPTION, options: PUBLISH_OPTIONS, remote: true, run: publishCommand },
  { name: 'keys', usage: 'generate|public …', summary: 'Nix-compatible signing keys', subcommands: KEYS_SUBCOMMANDS, run: keysCommand },
  { name: 'index', usage: 'export|import DIR', summary: 'the index as static files with a signed manifest, and back', subcommands: INDEX_SUBCOMMANDS, run: indexCommand },
  { name: 'cache', usage: `${Object.keys(CACHE_SUBCOMMANDS).join('|')} [options]`, summary: "the chunk store: figures, re-hashing, eviction, pins, pre-seeding ('narswarm cache help')", description: CACHE_DESCRIPTION, subcommands: CACHE_SUBCOMMANDS, run: cacheCommand },
  { name: 'peers', usage: '[--json] [--url URL]', summary: 'the LAN peers the running node knows: origin, score, what each served', description: PEERS_DESCRIPTION, options: PEERS_OPTIONS, run: peersCommand },
  { name: 'completion', usage: 'bash|zsh', summary: 'print a shell completion script (e.g. `source <(narswarm completion bash)`)', run: completionCommand },
  { name: 'help', usage: '[COMMAND]', summary: 'show this text, or a command\'s options', run: helpCommand },
  { name: 'version', usage: '', summary: 'print the version', run: async () => { process.stdout.write(`${VERSION}\n`); return 0 } }
]

export function findCommand (name: string): Command | undefined {
  return COMMANDS.find(c => c.name === name)
}

async function helpCommand (argv: string[]): Promise<number> {
  const [name, sub] = argv
  if (name === undefined) { process.stdout.write(await mainHelp(COMMANDS, VERSION)); return 0 }
  const command = findCommand(name)
  if (command === undefined) throw new UsageError(`help: unknown command '${name}'`)
  process.stdout.write(commandHelp(command, sub))
  return 0
}

async function completionCommand (argv: string[]): Promise<number> {
  const [shell] = argv
  if (shell !== 'bash' && shell !== 'zsh') throw new UsageError(`completion: name a shell: bash or zsh${shell === undefined ? '' : `, not '${shell}'`}`)
  process.stdout.write(completionScript(shell, COMMANDS))
  return 0
}
