/**
 * Durations in configuration: a number of seconds, or a string such as `500ms`, `30s`, `10m`,
 * `1h`, `30d`. Returned in milliseconds.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Returns milliseconds, or undefined when `value` is not a duration. */
export function parseDuration (value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined
  if (typeof value !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value)
  if (m === null) return undefined
  return Number(m[1]) * UNIT_MS[m[2] ?? 's']!
}
