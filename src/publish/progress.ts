/**
 * What a publish run shows while it works: on a terminal one line redrawn in place (paths, bytes,
 * rate, ETA); otherwise — a pipe, a log file, a systemd unit — a plain log line at once, after a
 * second and then every interval. And the summary at the end: published, skipped, excluded, failed with each
 * reason. It starts with the command, so the time spent listing what to publish is shown (as
 * `listed`) and counted in the summary's wall time; totals may grow while paths stream in.
 */
import type { Logger } from '../log.ts'

const MiB = 1 << 20

export interface Totals { paths: number, bytes: number }

export class Progress {
  published = 0
  skipped = 0
  bytes = 0
  /** Paths left out by --include, --exclude, --max-size. */
  excluded = 0
  /** Paths found so far while listing, before publishing starts (undefined once it has). */
  listed: number | undefined
  readonly failures: Array<{ path: string, reason: string }> = []
  /** Paths and bytes to publish, as far as known: they may grow while the paths stream in. */
  readonly totals: Totals
  readonly #out: NodeJS.WriteStream
  readonly #summary: NodeJS.WritableStream
  readonly #log: Logger
  readonly #interactive: boolean
  readonly #started = performance.now()
  readonly #timer: NodeJS.Timeout
  readonly #first: NodeJS.Timeout

  constructor (totals: Totals, options: { out: NodeJS.WriteStream, summary: NodeJS.WritableStream, log: Logger, interactive: boolean, intervalMs?: number }) {
    this.totals = totals
    this.#out = options.out
    this.#summary = options.summary
    this.#log = options.log
    this.#interactive = options.interactive
    const interval = options.intervalMs ?? (this.#interactive ? 200 : 10_000)
    this.#timer = setInterval(() => this.#show(), interval).unref()
    // Shown at once, and again after a second: a run that has just started says so.
    this.#first = setTimeout(() => this.#show(), Math.min(interval, 1000)).unref()
    queueMicrotask(() => this.#show())
  }

  get settled (): number { return this.published + this.skipped + this.failures.length }

  fail (path: string, reason: string): void { this.failures.push({ path, reason }) }

  #rate (): number { return this.bytes / MiB / this.#seconds() }

  #show (): void {
    if (this.listed !== undefined) {
      if (this.#interactive) this.#out.write(`\r\x1b[Klisting paths to publish: ${this.listed} so far · ${formatDuration(this.#seconds())}`)
      else this.#log.info({ listed: this.listed }, 'publish progress: listing paths')
      return
    }
    const rate = this.#rate()
    const eta = this.#eta(rate)
    const fields = { paths: this.settled, totalPaths: this.totals.paths, mib: round(this.bytes / MiB), totalMib: round(this.totals.bytes / MiB), mibPerSec: round(rate), failed: this.failures.length }
    if (this.#interactive) {
      this.#out.write(`\r\x1b[K${fields.paths}/${fields.totalPaths} paths · ${fields.mib}/${fields.totalMib} MiB · ${fields.mibPerSec} MiB/s · ETA ${eta}` +
        `${fields.failed > 0 ? ` · ${fields.failed} failed` : ''}`)
    } else {
      this.#log.info({ ...fields, eta }, 'publish progress')
    }
  }

  /** Seconds since the start, never 0 (a divisor). */
  #seconds (): number { return Math.max((performance.now() - this.#started) / 1000, 0.001) }

  /** By bytes when the total is known, else by paths. */
  #eta (rate: number): string {
    if (this.totals.bytes > 0) return rate > 0 && this.bytes > 0 ? formatDuration(Math.max(this.totals.bytes - this.bytes, 0) / MiB / rate) : '?'
    const pathRate = this.settled / this.#seconds()
    return pathRate > 0 && this.totals.paths > 0 ? formatDuration(Math.max(this.totals.paths - this.settled, 0) / pathRate) : '?'
  }

  /** Stops the display and writes the summary; returns it as text too. */
  finish (): string {
    clearInterval(this.#timer)
    clearTimeout(this.#first)
    if (this.#interactive) this.#out.write('\r\x1b[K')
    const seconds = this.#seconds()
    const lines = [`published ${this.published}, skipped ${this.skipped} (already published), excluded ${this.excluded}, failed ${this.failures.length}` +
      ` — ${round(this.bytes / MiB)} MiB in ${formatDuration(seconds)} (${round(this.#rate())} MiB/s, ${round(this.settled / seconds)} paths/s)`]
    for (const f of this.failures) lines.push(`failed ${f.path}: ${f.reason}`)
    const text = `${lines.join('\n')}\n`
    this.#summary.write(text)
    return text
  }
}

function round (x: number): number { return Math.round(x * 10) / 10 }

function formatDuration (seconds: number): string {
  const s = Math.round(seconds)
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, '0')}m`
}
