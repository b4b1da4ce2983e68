/**
 * The shared NAR fetch on its own, with sources written in the test (bodies the test paces) and an
 * in-memory store: one source read for many readers, followers fed as the fetch progresses,
 * nothing from an untrusted source released before the whole NAR verified, the untrusted budget,
 * store fillers, storage failures, ranges. End to end with the real Nix: test/e2e/nar-store.test.ts.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { NarFetch, type NarFetchContext, type NarFetchSources } from '../../src/server/nar-fetch.ts'
import { clearSpoolDir } from '../../src/server/spool.ts'
import { StorageError } from '../../src/errors.ts'
import { SourceScores } from '../../src/backend/scores.ts'
import { SourceHealth } from '../../src/upstream/health.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { silentLogger } from '../../src/log.ts'
import type { RaceCandidate } from '../../src/backend/race.ts'
import type { StoreFiller } from '../../src/chunk/types.ts'
import { MemoryStore } from '../helpers/memory-store.ts'
import { tempDir } from '../helpers/temp.ts'

const nar = randomBytes(1_500_000)
const identity = { narHash: NixHash.of('sha256', nar), narSize: nar.length, storePath: '/nix/store/00000000000000000000000000000000-x' }
const PIECE = 64 * 1024

interface Gate { open: () => void, wait: Promise<void> }
const gate = (): Gate => { let open!: () => void; const wait = new Promise<void>(resolve => { open = resolve }); return { open, wait } }

/** A source of `bytes` whose body stops after `pauseAt` bytes until `resume` opens; counts opens. */
function source (name: string, bytes: Buffer, opts: { pauseAt?: number, resume?: Gate, absent?: boolean } = {}): RaceCandidate & { opens: number } {
  const candidate = {
    name,
    opens: 0,
    open: async () => {
      candidate.opens++
      if (opts.absent === true) return undefined
      return {
        compression: 'none',
        body: (async function * () {
          for (let offset = 0; offset < bytes.length; offset += PIECE) {
            if (opts.pauseAt !== undefined && offset >= opts.pauseAt && offset - PIECE < opts.pauseAt) await opts.resume!.wait
            yield bytes.subarray(offset, offset + PIECE)
          }
        })()
      }
    }
  }
  return candidate
}

async function context (store?: MemoryStore, budget = 5_000): Promise<NarFetchContext> {
  const spoolDir = tempDir('narswarm-spool-')
  await clearSpoolDir(spoolDir)
  return {
    ...(store === undefined ? {} : { store }),
    spoolDir, log: silentLogger(), health: new SourceHealth({ cooldown: 60_000 }), scores: new SourceScores(),
    hedgeDelay: 50, firstByteTimeout: 5_000, untrustedBudget: budget, storageFailed: () => {}
  }
}

function sources (untrusted: RaceCandidate[], upstreams: RaceCandidate[], fillers: StoreFiller[] = []): NarFetchSources {
  return { untrusted: async () => untrusted, upstreams, fillers }
}

async function readAll (body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of body) parts.push(c)
  return Buffer.concat(parts)
}

describe('the shared NAR fetch', () => {
  test('50 readers share one source read; followers get bytes before the source ends; the store has it after', async () => {
    const store = new MemoryStore()
    const resume = gate()
    const upstream = source('upstream', nar, { pauseAt: 700_000, resume })
    const fetch = new NarFetch(identity, sources([], [upstream]), await context(store))
    const readers = await Promise.all(Array.from({ length: 50 }, async () => (await fetch.open(0, nar.length))!))
    // A follower tails the spool: it gets the verified prefix while the source is paused.
    const it = readers[49]!.body[Symbol.asyncIterator]()
    const first = await it.next()
    assert.ok(first.done !== true && first.value.length > 0)
    resume.open()
    const rest = await readAll({ [Symbol.asyncIterator]: () => it })
    assert.ok(Buffer.concat([first.value!, rest]).equals(nar))
    for (const r of readers.slice(0, 49)) assert.ok((await readAll(r.body)).equals(nar))
    await fetch.done
    assert.equal(upstream.opens, 1)
    assert.equal(store.ingests, 1)
    assert.ok(store.manifest(identity.narHash) !== undefined, 'committed to the store')
  })

  test('a store that keeps nothing (cache-size = 0): readers share the fetch, nothing is ingested', async () => {
    const store = new MemoryStore()
    store.capacity = 0
    const upstream = source('upstream', nar)
    const fetch = new NarFetch(identity, sources([], [upstream]), await context(store))
    const readers = await Promise.all(Array.from({ length: 3 }, async () => (await fetch.open(0, nar.length))!))
    for (const r of readers) assert.ok((await readAll(r.body)).equals(nar))
    await fetch.done
    assert.equal(upstream.opens, 1)
    assert.equal(store.ingests, 0)
    assert.equal(store.manifest(identity.narHash), undefined)
  })

  test('an untrusted source releases nothing before the whole NAR verified; a bad one is never released', async () => {
    const bad = Buffer.from(nar)
    bad[bad.length - 1]! ^= 1 // the last chunk is wrong: a NAR over 512 KiB
    const resume = gate()
    const mirror = source('mirror', nar, { pauseAt: 1_400_000, resume })
    const fetch = new NarFetch(identity, sources([mirror], []), await context(undefined))
    const reader = (await fetch.open(0, nar.length))!
    const it = reader.body[Symbol.asyncIterator]()
    let got = false
    const next = it.next().then(r => { got = true; return r })
    await new Promise(resolve => setTimeout(resolve, 200))
    assert.equal(got, false, 'no byte before the untrusted NAR is complete')
    resume.open()
    const first = await next
    assert.ok(Buffer.concat([first.value!, await readAll({ [Symbol.asyncIterator]: () => it })]).equals(nar))

    const liar = source('liar', bad)
    const upstream = source('upstream', nar)
    const ctx = await context(undefined, 60_000)
    const second = new NarFetch(identity, sources([liar], [upstream]), ctx)
    const body = await readAll((await second.open(0, nar.length))!.body)
    assert.ok(body.equals(nar), 'only the upstream\'s verified copy reached the reader')
    assert.ok(ctx.health.isBadFor('liar', identity.narHash.toNix32()))
  })

  test('an untrusted source slower than the budget: the upstream starts and the first complete copy wins', async () => {
    const stuck = gate()
    const slow = source('slow-peer', nar, { pauseAt: 100_000, resume: stuck })
    const upstream = source('upstream', nar)
    const fetch = new NarFetch(identity, sources([slow], [upstream]), await context(new MemoryStore(), 300))
    const reader = (await fetch.open(0, nar.length))!
    assert.ok((await readAll(reader.body)).equals(nar))
    assert.equal(reader.source(), 'upstream')
    await fetch.done
    stuck.open()
  })

  test('a store filler commits the NAR and readers render it from the store', async () => {
    const store = new MemoryStore()
    const filler: StoreFiller = { name: 'peer', fill: async (expected, s) => { await s.ingest(expected, (async function * () { yield nar })()); return true } }
    const upstream = source('upstream', nar, { absent: true })
    const fetch = new NarFetch(identity, sources([], [upstream], [filler]), await context(store, 60_000))
    const reader = (await fetch.open(1000, 2000))!
    assert.ok((await readAll(reader.body)).equals(nar.subarray(1000, 2000)))
    assert.equal(reader.source(), 'peer')
  })

  test('a filler that copied the NAR as it verified it: readers get the last copy, not the store; a copy that fell short is left for the store', async () => {
    for (const copies of [[nar.subarray(0, 5000), nar], [nar, nar.subarray(0, 700_000)]]) {
      const store = new MemoryStore()
      const filler: StoreFiller = {
        name: 'peer',
        fill: async (expected, s, options) => {
          // One copy per manifest tried: the last belongs to the manifest that committed.
          for (const bytes of copies) {
            const copy = await options!.newCopy!()
            for (let o = 0; o < bytes.length; o += PIECE) await copy.append([bytes.subarray(o, o + PIECE)])
          }
          await s.ingest(expected, (async function * () { yield nar })())
          return true
        }
      }
      let renders = 0
      const render = store.render.bind(store)
      store.render = (...args) => { renders++; return render(...args) }
      const fetch = new NarFetch(identity, sources([], [source('upstream', nar, { absent: true })], [filler]), await context(store, 60_000))
      const reader = (await fetch.open(0, nar.length))!
      assert.ok((await readAll(reader.body)).equals(nar))
      assert.equal(reader.source(), 'peer')
      assert.equal(renders, copies.at(-1)!.length === nar.length ? 0 : 1, 'read back from the store only without a whole copy')
    }
  })

  test('every source absent: not found; a failure is not absence', async () => {
    const fetch = new NarFetch(identity, sources([source('m', nar, { absent: true })], [source('u', nar, { absent: true })]), await context())
    assert.equal(await fetch.open(0, nar.length), undefined)
    const failing = { name: 'down', open: async () => { throw new Error('connection refused') } }
    const other = new NarFetch(identity, sources([], [failing, source('u', nar, { absent: true })]), await context())
    await assert.rejects(other.open(0, nar.length), /connection refused/)
  })

  test('a silent peer is never absence: the upstreams said absent, the peer never answered', async () => {
    const silent: StoreFiller = { name: 'silent-peer', fill: async (_, __, options) => await new Promise((_resolve, reject) => options?.signal?.addEventListener('abort', () => reject(options.signal!.reason))) }
    const fetch = new NarFetch(identity, sources([], [source('u', nar, { absent: true })], [silent]), await context(new MemoryStore(), 100))
    await assert.rejects(fetch.open(0, nar.length), /still busy/)
  })

  test('a full store costs only the caching; ranges are served from the spool', async () => {
    const store = new MemoryStore()
    store.full = true
    const fetch = new NarFetch(identity, sources([], [source('upstream', nar)]), await context(store))
    const [whole, range] = await Promise.all([fetch.open(0, nar.length), fetch.open(600_000, 900_001)])
    assert.ok((await readAll(whole!.body)).equals(nar))
    assert.ok((await readAll(range!.body)).equals(nar.subarray(600_000, 900_001)))
    await fetch.done
    assert.equal(store.manifest(identity.narHash), undefined)
  })

  test('a spool that cannot be created: the fetch fails with the storage error, not as its sources', async () => {
    const ctx = await context()
    const failures: string[] = []
    const next = source('next', nar)
    const fetch = new NarFetch(identity, sources([], [source('upstream', nar), next]), {
      ...ctx, spoolDir: `${ctx.spoolDir}/missing`, storageFailed: (_, where) => failures.push(where)
    })
    const reader = await fetch.open(0, nar.length)
    await assert.rejects(readAll(reader!.body), (err: Error) => err instanceof StorageError)
    assert.deepEqual(failures, ['spool'])
    assert.equal(next.opens, 0, 'no other source is opened only to fail the same way')
  })
})
