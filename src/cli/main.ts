#!/usr/bin/env node
/**
 * The `narswarm` command line: dispatch through the command table (`commands.ts`) and the one
 * error path. A usage error (UsageError) is one line and exit status 2; a configuration error or
 * another failure narswarm names is one line and exit status 1; only an error nobody foresaw
 * prints its stack. `narswarm` alone and `narswarm --flag …` run `serve`.
 */
import { ConfigError, UsageError } from '../errors.ts'
import { didYouMean } from './args.ts'
import { COMMANDS, findCommand, type Command } from './commands.ts'
import { commandHelp } from './help.ts'
import { ensureServeNodeFlags } from './node-flags.ts'
import { trustSystemCertificates } from './tls-trust.ts'

/** Errors whose message says all a user needs; anything else is a bug and keeps its stack. */
const NAMED = new Set(['FormatError', 'IntegrityError', 'SignatureError', 'UpstreamError', 'RangeNotSatisfiableError', 'AbortError'])

async function main (argv: string[]): Promise<number> {
  const [first] = argv
  if (first === '--help' || first === '-h') return await findCommand('help')!.run([])
  if (first === '--version') return await findCommand('version')!.run([])
  const implicitServe = first === undefined || first.startsWith('-')
  const command = implicitServe ? findCommand('serve')! : findCommand(first)
  if (command === undefined) throw new UsageError(`unknown command '${first}'${didYouMean(first!, COMMANDS.map(c => c.name))}; 'narswarm help' lists them`)
  const rest = implicitServe ? argv : argv.slice(1)
  if (command.name !== 'help' && wantsHelp(command, rest)) {
    const words = rest.filter(a => !a.startsWith('-'))
    process.stdout.write(commandHelp(command, words[0] === 'help' ? words[1] : words[0]))
    return 0
  }
  if (command.name === 'serve') ensureServeNodeFlags()
  if (command.remote === true) for (const problem of trustSystemCertificates()) process.stderr.write(`narswarm: warning: ${problem}\n`)
  return await command.run(rest)
}

/** `--help` or `-h` before any `--`, or `help` in place of a subcommand (`narswarm cache help`). */
function wantsHelp (command: Command, argv: string[]): boolean {
  if (command.subcommands !== undefined && argv[0] === 'help') return true
  const end = argv.indexOf('--')
  return (end === -1 ? argv : argv.slice(0, end)).some(a => a === '--help' || a === '-h')
}

// A reader that stopped early (`narswarm peers | head`) is no failure of the command: the output it
// still had to write has nowhere to go, so the command ends there, as other Unix tools do.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err
  process.exit(process.exitCode ?? 0)
})

main(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: unknown) => {
  const e = err as Error & { code?: string }
  if (err instanceof UsageError) {
    process.stderr.write(`narswarm: ${e.message}\n`)
    process.exitCode = 2
    return
  }
  if (err instanceof ConfigError) process.stderr.write(`narswarm: configuration error: ${e.message}\n`)
  else if (e.code === 'EADDRINUSE') process.stderr.write(`narswarm: ${e.message}: is another narswarm already running?\n`)
  else if (NAMED.has(e.name)) process.stderr.write(`narswarm: ${e.message}\n`)
  else process.stderr.write(`narswarm: ${e.stack ?? String(err)}\n`)
  process.exitCode = 1
})
