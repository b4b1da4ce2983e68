import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { tee } from '../../src/util/tee.ts'

async function * numbered (n: number, pulled: number[], opts: { failAt?: number } = {}): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) {
    if (i === opts.failAt) throw new Error('source broke')
    pulled.push(i)
    yield Uint8Array.of(i)
  }
}

async function drain (it: AsyncIterable<Uint8Array>, delayMs = 0): Promise<number[]> {
  const got: number[] = []
  for await (const c of it) {
    got.push(c[0]!)
    if (delayMs > 0) await new Promise(resolve => setTimeout(resolve, delayMs))
  }
  return got
}

describe('tee', () => {
  it('delivers every chunk to every consumer, in order', async () => {
    const pulled: number[] = []
    const [a, b, c] = tee(numbered(50, pulled), 3)
    const all = await Promise.all([drain(a!), drain(b!, 1), drain(c!)])
    const want = Array.from({ length: 50 }, (_, i) => i)
    for (const got of all) assert.deepEqual(got, want)
    assert.deepEqual(pulled, want, 'the source was read once')
  })

  it('reads ahead of the slowest consumer by at most one chunk', async () => {
    const pulled: number[] = []
    const [fast, slow] = tee(numbered(20, pulled), 2)
    const fastDone = drain(fast!)
    const seen: number[] = []
    for await (const c of slow!) {
      seen.push(c[0]!)
      await new Promise(resolve => setTimeout(resolve, 2))
      assert.ok(pulled.length <= seen.length + 1, `pulled ${pulled.length} while the slow consumer has ${seen.length}`)
    }
    await fastDone
  })

  it('a consumer that stops or is closed does not hold the others up; all stopped closes the source', async () => {
    let closed = false
    async function * source (): AsyncGenerator<Uint8Array> {
      try { for (let i = 0; ; i++) yield Uint8Array.of(i % 256) } finally { closed = true }
    }
    const [a, b, never] = tee(source(), 3)
    never!.close() // e.g. its backend failed before reading
    // Consumers read concurrently: lock step means one cannot run ahead of the others.
    const readA = async (): Promise<number> => { let n = 0; for await (const _ of a!) { if (++n === 3) break } return n }
    const readB = async (): Promise<number> => { let n = 0; for await (const _ of b!) { if (++n === 100) break } return n }
    assert.deepEqual(await Promise.all([readA(), readB()]), [3, 100])
    await new Promise(resolve => setImmediate(resolve))
    assert.ok(closed, 'the source was closed once nobody read it')
  })

  it('an error of the source reaches every consumer', async () => {
    const [a, b] = tee(numbered(10, [], { failAt: 5 }), 2)
    await Promise.all([a!, b!].map(async c => await assert.rejects(drain(c), /source broke/)))
  })

  it('an empty source ends every consumer', async () => {
    const [a, b] = tee(numbered(0, []), 2)
    assert.deepEqual(await Promise.all([drain(a!), drain(b!)]), [[], []])
  })
})
