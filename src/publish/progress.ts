/**
 * What a publish run shows while it works: on a terminal one line redrawn in place (paths, bytes,
 * rate, ETA); otherwise — a pipe, a log file, a systemd unit — a plain log line every interval.
 * And the summary at the end: published, skipped, excluded, failed with each reason.
 */
import type { Logger } from '../log.ts'

const MiB = 1 << 20

export interface Totals { paths: number, bytes: number }

export class Progress {
  published = 0
  skipped = 0
  bytes = 0
  readonly failures: Array<{ path: string, reason: string }> = []
  readonly excluded: Array<{ path: string, reason: string }> = []
  readonly #totals: Totals
  readonly #out: NodeJS.WriteStream
  readonly #summary: NodeJS.WritableStream
  readonly #log: Logger
  readonly #interactive: boolean
  readonly #started = performance.now()
  readonly #timer: NodeJS.Timeout

  constructor (totals: Totals, options: { out: NodeJS.WriteStream, summary: NodeJS.WritableStream, log: Logger, interactive: boolean, intervalMs?: number }) {
    this.#totals = totals
    this.#out = options.out
    this.#summary = options.summary
    this.#log = options.log
    this.#interactive = options.interactive
    this.#timer = setInterval(() => this.#show(), options.intervalMs ?? (this.#interactive ? 200 : 10_000)).unref()
  }

  get settled (): number { return this.published + this.skipped + this.failures.length }

  fail (path: string, reason: string): void { this.failures.push({ path, reason }) }

  #rate (): number { return this.bytes / MiB / Math.max((performance.now() - this.#started) / 1000, 0.001) }

  #show (): void {
    const rate = this.#rate()
    const left = Math.max(this.#totals.bytes - this.bytes, 0) / MiB
    const eta = rate > 0 && this.bytes > 0 ? formatDuration(left / rate) : '?'
    const fields = { paths: this.settled, totalPaths: this.#totals.paths, mib: round(this.bytes / MiB), totalMib: round(this.#totals.bytes / MiB), mibPerSec: round(rate), failed: this.failures.length }
    if (this.#interactive) {
      this.#out.write(`\r\x1b[K${fields.paths}/${fields.totalPaths} paths · ${fields.mib}/${fields.totalMib} MiB · ${fields.mibPerSec} MiB/s · ETA ${eta}` +
        `${fields.failed > 0 ? ` · ${fields.failed} failed` : ''}`)
    } else {
      this.#log.info({ ...fields, eta }, 'publish progress')
    }
  }

  /** Stops the display and writes the summary; returns it as text too. */
  finish (): string {
    clearInterval(this.#timer)
    if (this.#interactive) this.#out.write('\r\x1b[K')
    const seconds = (performance.now() - this.#started) / 1000
    const lines = [`published ${this.published}, skipped ${this.skipped} (already published), excluded ${this.excluded.length}, failed ${this.failures.length}` +
      ` — ${round(this.bytes / MiB)} MiB in ${formatDuration(seconds)} (${round(this.#rate())} MiB/s, ${round(this.settled / Math.max(seconds, 0.001))} paths/s)`]
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
