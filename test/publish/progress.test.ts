/**
 * What `narswarm publish` shows: a line redrawn in place on a terminal, plain log lines elsewhere,
 * and the summary with every failure and its reason.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Progress } from '../../src/publish/progress.ts'

function sink (): { stream: NodeJS.WriteStream, text: () => string } {
  let text = ''
  const stream = new Writable({ write (chunk, _enc, done) { text += String(chunk); done() } }) as unknown as NodeJS.WriteStream
  return { stream, text: () => text }
}

const wait = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))
const MiB = 1 << 20

describe('publish progress', () => {
  it('on a terminal: one line redrawn in place with paths, bytes, rate and ETA; the summary on its own stream', async () => {
    const out = sink()
    const summary = sink()
    const p = new Progress({ paths: 4, bytes: 8 * MiB }, { out: out.stream, summary: summary.stream, log: pino({ level: 'silent' }), interactive: true, intervalMs: 5 })
    p.bytes = 2 * MiB
    p.published = 1
    await wait(40)
    assert.match(out.text(), /\r\x1b\[K1\/4 paths · 2\/8 MiB · [\d.]+ MiB\/s · ETA \d+s/)
    p.published = 2
    p.skipped = 1
    p.fail('/nix/store/00000000000000000000000000000000-x', 'hash mismatch')
    const text = p.finish()
    assert.match(text, /^published 2, skipped 1 \(already published\), excluded 0, failed 1 — 2 MiB in /)
    assert.match(text, /\nfailed \/nix\/store\/0{32}-x: hash mismatch\n$/)
    assert.equal(summary.text(), text)
    assert.ok(out.text().endsWith('\r\x1b[K'), 'the progress line is cleared before the summary')
    const length = out.text().length
    await wait(30)
    assert.equal(out.text().length, length, 'nothing is drawn after finish')
  })

  it('elsewhere: periodic log lines with the same figures, nothing drawn', async () => {
    const lines: Array<Record<string, unknown>> = []
    const log = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { lines.push(JSON.parse(String(chunk)) as Record<string, unknown>); done() } }))
    const out = sink()
    const p = new Progress({ paths: 10, bytes: 0 }, { out: out.stream, summary: sink().stream, log, interactive: false, intervalMs: 5 })
    p.published = 3
    await wait(40)
    p.finish()
    const progress = lines.filter(l => l.msg === 'publish progress')
    assert.ok(progress.length > 0)
    assert.equal(progress.at(-1)!.paths, 3)
    assert.equal(progress.at(-1)!.totalPaths, 10)
    assert.equal(out.text(), '')
  })
})
