/**
 * Logging: JSON lines on stderr (pino), one logger per component. Fixed field names across the
 * code base — `storePath`, `narHash`, `upstream`, `source`, `ms`, `bytes`, `status` — so logs can be
 * queried. Never log keys, tokens or URL query strings (they may carry credentials).
 */
import { pino, type Logger as PinoLogger } from 'pino'

export type Logger = Pick<PinoLogger, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'child' | 'level'>

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export function createLogger (level: LogLevel = 'info', destination: number | NodeJS.WritableStream = 2): Logger {
  const stream = typeof destination === 'number' ? pino.destination({ fd: destination, sync: false }) : destination
  return pino({ level, base: { name: 'narswarm' }, timestamp: pino.stdTimeFunctions.isoTime }, stream)
}

/** A logger that drops everything, for library use and unit tests. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}

/** Strips credentials and query strings from a URL before it goes into a log line. */
export function redactUrl (url: string | URL): string {
  try {
    const u = new URL(url)
    u.username = ''
    u.password = ''
    u.search = ''
    return u.toString()
  } catch {
    return '<invalid url>'
  }
}
