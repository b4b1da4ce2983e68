/**
 * Logging: JSON lines on stderr (pino), one logger per component. Fixed field names across the
 * code base — `storePath`, `narHash`, `upstream`, `source`, `ms`, `bytes`, `status` — so logs can be
 * queried. Never log keys, tokens or URL query strings (they may carry credentials).
 *
 * `log-format` picks what a person sees: `json` (machines, journald), `pretty` (pino-pretty: one
 * coloured line per event), or `auto`, pretty when stderr is a terminal. A `tap` receives every
 * warning and error as an object as well, so the status page can list recent failures with the
 * reason that was logged, without each call site reporting them twice.
 */
import { Writable } from 'node:stream'
import { pino, type Logger as PinoLogger } from 'pino'
import pretty from 'pino-pretty'

export type Logger = Pick<PinoLogger, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'child' | 'level'>

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const
export type LogFormat = typeof LOG_FORMATS[number]

/** One warning or error as the tap receives it: pino's object (level, time, msg and fields). */
export type LogRecord = Record<string, unknown> & { level: number, msg?: string, time?: string }

export interface LoggerOptions {
  format?: LogFormat
  /** Receives every line at `warn` or above, parsed. */
  tap?: (record: LogRecord) => void
}

export function createLogger (level: LogLevel = 'info', destination: number | NodeJS.WritableStream = 2, options: LoggerOptions = {}): Logger {
  const fd = typeof destination === 'number' ? destination : undefined
  const human = options.format === 'pretty' || (options.format === 'auto' && fd !== undefined && isTerminal(fd))
  const out: pino.DestinationStream = human
    ? pretty({ destination: fd ?? destination as NodeJS.WritableStream, sync: false, colorize: fd !== undefined && isTerminal(fd), translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' })
    : fd !== undefined ? pino.destination({ fd, sync: false }) : destination as NodeJS.WritableStream
  const settings = { level, base: { name: 'narswarm' }, timestamp: pino.stdTimeFunctions.isoTime }
  if (options.tap === undefined) return pino(settings, out)
  const tap = options.tap
  const tapStream = new Writable({
    write (line: Buffer | string, _encoding, done) {
      try { tap(JSON.parse(String(line)) as LogRecord) } catch { /* a line the tap cannot read is still logged */ }
      done()
    }
  })
  return pino(settings, pino.multistream([{ level, stream: out }, { level: 'warn', stream: tapStream }]))
}

function isTerminal (fd: number): boolean {
  return fd === 2 ? process.stderr.isTTY === true : fd === 1 ? process.stdout.isTTY === true : false
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
