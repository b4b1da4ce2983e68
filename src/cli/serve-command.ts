/**
 * `narswarm serve` (also `narswarm` alone, and `narswarm --flag …`): every setting is a flag, parsed
 * by the shared parser; the configuration layers are merged in `config.ts`.
 */
import { createLogger } from '../log.ts'
import { Observer } from '../server/observer.ts'
import { parseCommandLine } from './args.ts'
import { loadConfig, settingFlags, settingOptions } from './config.ts'
import { startSubstituter } from './serve.ts'

export const SERVE_OPTIONS = settingOptions()

export async function serveCommand (argv: string[]): Promise<number> {
  const { values } = parseCommandLine('serve', argv, SERVE_OPTIONS)
  const config = loadConfig({ flags: settingFlags(values), env: process.env })
  // The logger feeds its warnings to the observer too: the status page lists them.
  const observer = new Observer()
  const log = createLogger(config.logLevel, 2, { format: config.logFormat, tap: observer.logTap })
  const running = await startSubstituter(config, log, observer)
  await new Promise<void>(resolve => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'shutting down')
      // A plug-in that does not finish closing must not keep a stopped server alive for ever.
      const deadline = setTimeout(() => { log.error({ ms: config.shutdownGrace + 5000 }, 'shutdown did not finish: exiting'); process.exit(1) }, config.shutdownGrace + 5000)
      running.close().then(resolve, (err: unknown) => { log.error({ err }, 'error during shutdown'); resolve() }).finally(() => clearTimeout(deadline))
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  // Everything narswarm opened is closed now; a handle a dependency keeps beyond its own close
  // (utp-native's socket, with the torrent backend's utp=true) must not keep the process alive.
  setTimeout(() => process.exit(), 1000).unref()
  return 0
}
