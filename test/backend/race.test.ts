import { test } from 'node:test'
import assert from 'node:assert/strict'
import { race, type RaceCandidate } from '../../src/backend/race.ts'
import { SourceScores } from '../../src/backend/scores.ts'

/** A candidate that answers after `delay` ms with `chunks`, or absent/fails; records aborts. */
function candidate (name: string, behaviour: { delay?: number, chunks?: string[], absent?: boolean, fail?: string }, log: string[]): RaceCandidate {
  return {
    name,
    open: async (signal) => {
      log.push(`open ${name}`)
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, behaviour.delay ?? 0)
        signal.addEventListener('abort', () => { clearTimeout(t); log.push(`abort ${name}`); reject(signal.reason) }, { once: true })
      })
      if (behaviour.fail !== undefined) throw new Error(behaviour.fail)
      if (behaviour.absent === true) return undefined
      return {
        compression: 'none',
        body: (async function * () {
          try { for (const c of behaviour.chunks ?? ['x']) yield Buffer.from(c) } finally { log.push(`end ${name}`) }
        })()
      }
    }
  }
}

async function text (body: AsyncIterable<Uint8Array>): Promise<string> {
  let s = ''
  for await (const c of body) s += Buffer.from(c).toString()
  return s
}

const opts = (scores = new SourceScores()) => ({ scores, hedgeDelay: 30, firstByteTimeout: 2_000 })

test('the first candidate wins when it is fast; the others never start', async () => {
  const log: string[] = []
  const w = await race([candidate('a', { chunks: ['he', 'llo'] }, log), candidate('b', {}, log)], opts())
  assert.equal(w?.name, 'a')
  assert.equal(await text(w!.source.body), 'hello')
  assert.deepEqual(log.filter(l => l.startsWith('open')), ['open a'])
})

test('a slow first candidate is hedged; the faster one wins and the loser is aborted', async () => {
  const log: string[] = []
  const scores = new SourceScores()
  const w = await race([candidate('slow', { delay: 500 }, log), candidate('fast', { delay: 0, chunks: ['ok'] }, log)], opts(scores))
  assert.equal(w?.name, 'fast')
  assert.equal(await text(w!.source.body), 'ok')
  assert.ok(log.includes('abort slow'))
  // Next time the fast source is asked first.
  assert.ok(scores.score('fast') < scores.score('slow'))
  const log2: string[] = []
  const again = await race([candidate('slow', { delay: 500 }, log2), candidate('fast', {}, log2)], opts(scores))
  assert.equal(again?.name, 'fast')
  assert.equal(log2[0], 'open fast')
})

test('absent and failing candidates make room for the next at once', async () => {
  const log: string[] = []
  // Waiting for the 10 s hedge instead would run into the 1 s first-byte timeout and fail.
  const w = await race([candidate('gone', { absent: true }, log), candidate('broken', { fail: 'boom' }, log), candidate('good', { chunks: ['y'] }, log)], { ...opts(), hedgeDelay: 10_000, firstByteTimeout: 1_000 })
  assert.equal(w?.name, 'good')
  assert.deepEqual(log.filter(l => l.startsWith('open')), ['open gone', 'open broken', 'open good'])
})

test('all absent → undefined; any failure and no winner → UpstreamError', async () => {
  const log: string[] = []
  assert.equal(await race([candidate('a', { absent: true }, log), candidate('b', { absent: true }, log)], opts()), undefined)
  await assert.rejects(race([candidate('a', { absent: true }, log), candidate('b', { fail: 'down' }, log)], opts()), { name: 'UpstreamError', message: /down/ })
  await assert.rejects(race([candidate('hang', { delay: 10_000 }, log)], { ...opts(), firstByteTimeout: 50 }), { name: 'UpstreamError', message: /no first byte within 50 ms/ })
})

test('integrity failures reported to the scores put a source last', () => {
  const scores = new SourceScores()
  scores.firstByte('liar', 1)
  scores.firstByte('honest', 500)
  scores.integrityFailure('liar')
  assert.deepEqual(scores.rank(['liar', 'honest'], n => n), ['honest', 'liar'])
})

test('the caller’s abort stops the race and every candidate', async () => {
  const log: string[] = []
  const controller = new AbortController()
  const pending = race([candidate('a', { delay: 1000 }, log), candidate('b', { delay: 1000 }, log)], { ...opts(), signal: controller.signal })
  setTimeout(() => controller.abort(new Error('client left')), 80)
  await assert.rejects(pending, /client left/)
  assert.deepEqual(log.filter(l => l.startsWith('abort')).sort(), ['abort a', 'abort b'])
})
