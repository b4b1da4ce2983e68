/**
 * `Range` requests on NARs. Nix sends only `Range: bytes=N-`, to resume a transfer that broke
 * (and only after seeing `Accept-Ranges: bytes`); `bytes=N-M` and `bytes=-N` are accepted too for
 * other clients. A header with several ranges, or one that is not a byte range, is ignored (the
 * whole body is sent, as RFC 9110 allows); a range that starts past the end is unsatisfiable (416).
 */
import { RangeNotSatisfiableError } from '../errors.ts'

/** `[start, end)` to send, or undefined for the whole body. */
export function parseRange (header: string | undefined, size: number): [number, number] | undefined {
  if (header === undefined) return undefined
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header)
  if (m === null || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0) throw new RangeNotSatisfiableError(`empty suffix range '${header}'`)
    return [Math.max(size - suffix, 0), size]
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size)
  if (start >= size || end <= start) throw new RangeNotSatisfiableError(`range '${header}' is outside 0-${size - 1}`)
  return [start, end]
}
