/**
 * `narswarm serve` (also `narswarm` alone, and `narswarm --flag …`): every setting is a flag, parsed
 * by the shared parser; the configuration layers are merged in `config.ts`.
 */
import { createLogger } from '../log.ts'
import { parseCommandLine } from './args.ts'
import { loadConfig, settingFlags, settingOptions } from './config.ts'
import { startSubstituter } from './serve.ts'

export const SERVE_OPTIONS = settingOptions()

export async function serveCommand (argv: string[]): Promise<number> {
  const { values } = parseCommandLine('serve', argv, SERVE_OPTIONS)
  const config = loadConfig({ flags: settingFlags(values), env: process.env })
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
