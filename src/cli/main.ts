#!/usr/bin/env node
/**
 * The `narswarm` command line. Every setting of the configuration schema is also a flag
 * (`--listen`, `--state-dir`, …); `--upstream` may be repeated.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { envName, LIST_SETTINGS, loadConfig, SETTINGS } from './config.ts'
import { startSubstituter } from './serve.ts'
import { publishCommand } from './publish.ts'
import { keysCommand } from './keys.ts'
import { indexCommand } from './index-command.ts'
import { peersCommand } from './peers-command.ts'
import { cacheCommand } from './cache-command.ts'

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

const USAGE = `narswarm ${VERSION} — a peer-to-peer binary cache for Nix and Lix

Usage:
  narswarm serve [options]     run the substituter (default 127.0.0.1:37515)
  narswarm publish [options] [PATHS…]
                               put store paths into the backends and the index
                               ('narswarm publish --help')
  narswarm keys generate|public
                               Nix signing keys ('narswarm keys help')
  narswarm index export|import DIR
                               the index as static files ('narswarm index help')
  narswarm peers [--json]      the LAN peers the running node knows, scores, what they served
  narswarm cache stats|verify|gc|pin|unpin|import|clear
                               the chunk store ('narswarm cache help')
  narswarm help                show this text
  narswarm version             print the version

Options of 'serve' (each also settable as NARSWARM_<NAME> or in the TOML file):
  --config FILE                TOML configuration file (see narswarm.example.toml)
  --upstream URL               an upstream binary cache; repeat for several. Options go in the
                               query: ?priority=N&trusted-public-keys=name:key&require-sigs=false
  --mapper SPEC                an index: where NARs are (repeatable; default sqlite:). Schemes:
                               sqlite:, folder:///dir, http+https://host/prefix, exec:///program
  --backend SPEC               a NAR source (repeatable): file:///dir, mirror+https://a/,https://b/,
                               s3://bucket/prefix?endpoint=…, exec:///program
  --trusted-public-keys KEY    a key for narinfos from an index (repeatable; default: the upstreams')
  --peer URL                   a LAN peer's listener, http://host:port (repeatable; found by mDNS too)
${Object.entries(SETTINGS).map(([k, s]) => `  --${k} ${s.kind === 'integer' ? 'N' : s.kind === 'duration' ? 'DURATION' : s.kind === 'size' ? 'SIZE' : 'VALUE'}`.padEnd(31) + `default: ${s.default === '' ? '$XDG_DATA_HOME/narswarm' : s.default}   (${envName(k)})`).join('\n')}
`

async function main (argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv
  if (command === 'help' || command === '--help' || command === '-h') { process.stdout.write(USAGE); return 0 }
  if (command === 'version' || command === '--version') { process.stdout.write(`${VERSION}\n`); return 0 }
  if (command === 'publish') return await publishCommand(rest)
  if (command === 'keys') return await keysCommand(rest)
  if (command === 'index') return await indexCommand(rest)
  if (command === 'peers') return await peersCommand(rest)
  if (command === 'cache') return await cacheCommand(rest)
  if (command !== 'serve') {
    process.stderr.write(`narswarm: unknown command '${command}'\n\n${USAGE}`)
    return 2
  }
  const options: ParseArgsOptionsConfig = {
    config: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }
  for (const key of LIST_SETTINGS) options[key] = { type: 'string', multiple: true }
  for (const key of Object.keys(SETTINGS)) options[key] = { type: 'string' }
  let flags: Record<string, string | string[] | boolean | undefined>
  try {
    flags = parseArgs({ args: rest, options, strict: true, allowPositionals: false }).values as typeof flags
  } catch (err) {
    process.stderr.write(`narswarm serve: ${(err as Error).message}\n\nRun 'narswarm help' for the options.\n`)
    return 2
  }
  if (flags.help === true) { process.stdout.write(USAGE); return 0 }
  delete flags.help
  const config = loadConfig({ flags: flags as Record<string, string | string[] | undefined>, env: process.env })
  const log = createLogger(config.logLevel)
  const running = await startSubstituter(config, log)
  await new Promise<void>(resolve => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'shutting down')
      running.close().then(resolve, (err: unknown) => { log.error({ err }, 'error during shutdown'); resolve() })
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: unknown) => {
  if (err instanceof ConfigError) process.stderr.write(`narswarm: configuration error: ${err.message}\n`)
  else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') process.stderr.write(`narswarm: ${(err as Error).message}: is another narswarm already running?\n`)
  else process.stderr.write(`narswarm: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
