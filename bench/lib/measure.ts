/**
 * Single measurements: one curl download (MiB/s and time to first byte), node's sha256 over a file
 * in a pinned child process (the verification ceiling), and the sha256 of an HTTP body (for the
 * correctness checks before anything is timed). Plus median and table formatting.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { CLIENT_CPU, SERVER_CPU, pinned, runCommand } from './procs.ts'

export const MiB = 1 << 20

export interface Download {
  mibPerSec: number
  ttfbMs: number
}

/**
 * `curl -o /dev/null` on the client CPU; checks the status and, unless undefined (a compressed
 * stream whose length depends on how it is stored), the byte count.
 */
export async function curlDownload (url: string, expectedBytes: number | undefined): Promise<Download & { seconds: number }> {
  const [cmd, args] = pinned(CLIENT_CPU, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download} %{time_starttransfer} %{time_total}', url])
  const out = (await runCommand(cmd, args)).trim()
  const [code, size, speed, ttfb, total] = out.split(' ').map(Number)
  if (code !== 200 || (expectedBytes !== undefined && size !== expectedBytes)) {
    throw new Error(`curl ${url}: HTTP ${code}, ${size} bytes (expected 200 and ${expectedBytes ?? 'any number of'} bytes)`)
  }
  return { mibPerSec: speed! / MiB, ttfbMs: ttfb! * 1000, seconds: total! }
}

const SHA_CHILD = `
const { createHash } = require('node:crypto')
const { createReadStream } = require('node:fs')
const file = process.argv[1]
;(async () => {
  const hash = createHash('sha256')
  let bytes = 0
  const start = process.hrtime.bigint()
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) { hash.update(chunk); bytes += chunk.length }
  const hex = hash.digest('hex')
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  process.stdout.write(JSON.stringify({ bytes, seconds, hex }) + '\\n')
})()
`

/** node's sha256 over `file` streamed in 1 MiB chunks, in a child pinned like the servers. */
export async function sha256Ceiling (file: string, expectedHex: string): Promise<number> {
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, ['-e', SHA_CHILD, file])
  const r = JSON.parse(await runCommand(cmd, args)) as { bytes: number, seconds: number, hex: string }
  if (r.hex !== expectedHex) throw new Error(`sha256 child: ${file} hashed to ${r.hex}, expected ${expectedHex}`)
  return r.bytes / MiB / r.seconds
}

/** GETs `url` and returns the status, the body's sha256 (hex) and its length. */
export async function fetchDigest (url: string): Promise<{ status: number, hex: string, bytes: number }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, res => {
      const hash = createHash('sha256')
      let bytes = 0
      res.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, hex: hash.digest('hex'), bytes }))
      res.on('error', reject)
      res.on('aborted', () => reject(new Error(`${url}: response aborted after ${bytes} bytes`)))
    })
    req.on('error', reject)
    req.end()
  })
}

export function median (xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Fixed-width text table, first column left-aligned, the rest right-aligned. */
export function table (rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map(r => (r[c] ?? '').length)))
  return rows.map(r => r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)).join('  ').trimEnd()).join('\n')
}

export const fmt = (x: number, digits = 0): string => Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '—'

function cpuTimes (): { busy: number, total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const fields = line.trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0) // idle + iowait
  return { busy: total - idle, total }
}

/** Share of all CPUs (0–100) busy during the next `ms` milliseconds, or undefined off Linux. */
export async function machineBusy (ms = 1000): Promise<number | undefined> {
  try {
    const a = cpuTimes()
    await new Promise(resolve => setTimeout(resolve, ms))
    const b = cpuTimes()
    return b.total === a.total ? 0 : (100 * (b.busy - a.busy)) / (b.total - a.total)
  } catch {
    return undefined
  }
}
