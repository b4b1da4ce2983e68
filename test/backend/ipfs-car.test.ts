/**
 * CAR streams, one module at a time: the CAR codec against the reference implementation
 * (@ipld/car), the trustless gateway's answers over a real imported DAG (raw blocks, whole CARs,
 * byte ranges, duplicates, refusals), and the fetcher's CAR feed against sources that behave —
 * and against sources that lie, cut off, stall or do not have the file. Two real nodes exchanging
 * CAR streams over libp2p are in ipfs.test.ts.
 */
import { before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { CarBlockIterator, CarWriter } from '@ipld/car'
import { CID } from 'multiformats/cid'
import { FormatError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { silentLogger } from '../../src/log.ts'
import { contiguous, type BlockBytes } from '../../src/backend/ipfs/block-bytes.ts'
import { carHeader, carSection, readCar, type CarBlock } from '../../src/backend/ipfs/car.ts'
import { CarFeed, type CarSource } from '../../src/backend/ipfs/car-feed.ts'
import { decodeFileNode, readFile } from '../../src/backend/ipfs/dag-reader.ts'
import { importNar } from '../../src/backend/ipfs/publish.ts'
import { answerGatewayRequest, parseEntityBytes } from '../../src/backend/ipfs/trustless-gateway.ts'
import { chunks, collect, sha256Hex } from '../helpers/bytes.ts'

const MIB = 1 << 20

/** A file imported with narswarm's parameters into memory. */
async function imported (bytes: Uint8Array): Promise<{ root: CID, blocks: Map<string, Uint8Array> }> {
  const blocks = new Map<string, Uint8Array>()
  const root = await importNar({ narHash: NixHash.of('sha256', bytes), narSize: bytes.length, body: chunks(bytes) }, {
    put: async (cid: CID, block: Uint8Array) => { blocks.set(cid.toString(), block); return cid }
  })
  return { root, blocks }
}

const localOf = (blocks: Map<string, Uint8Array>) => async (cid: CID) => blocks.get(cid.toString())

async function carOf (root: CID, blocks: Map<string, Uint8Array>, query: string, accept = 'application/vnd.ipld.car'): Promise<CarBlock[]> {
  const answer = await answerGatewayRequest('GET', new URL(`http://x/ipfs/${root.toString()}${query}`), accept, localOf(blocks))
  assert.equal(answer.status, 200)
  const parsed = await CarBlockIterator.fromIterable(toAsync(answer.body!))
  assert.deepEqual((await parsed.getRoots()).map(String), [root.toString()])
  const out: CarBlock[] = []
  for await (const b of parsed) out.push(b)
  return out
}

async function * toAsync (body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Uint8Array> { yield * body }

/** The file's bytes rebuilt from a list of blocks (leaves in order). */
function leafBytes (blocks: CarBlock[]): Buffer {
  return Buffer.concat(blocks.filter(b => b.cid.code === 0x55).map(b => b.bytes))
}

let big: { bytes: Uint8Array, root: CID, blocks: Map<string, Uint8Array> }
before(async () => {
  // Over 174 leaves of ~256 KiB: the root links to interior nodes, which link to the leaves.
  const bytes = randomBytes(72 * MIB)
  big = { bytes, ...await imported(bytes) }
})

describe('CAR codec', () => {
  it('what narswarm writes, the reference reader (@ipld/car) reads, and so does narswarm, in chunks of any size', async () => {
    const root = big.root
    const mine = [carHeader(root), ...[...big.blocks].slice(0, 6).flatMap(([cid, bytes]) => carSection({ cid: CID.parse(cid), bytes }))]
    const theirs = await CarBlockIterator.fromIterable(toAsync(mine))
    assert.deepEqual((await theirs.getRoots()).map(String), [root.toString()])
    let n = 0
    for await (const b of theirs) { assert.deepEqual(b.bytes, big.blocks.get(b.cid.toString())); n++ }
    assert.equal(n, 6)

    // Fed in 1- to 7-byte pieces (every varint and CID straddles chunk boundaries), in network-sized
    // chunks (blocks come out as several pieces, not copied), and whole.
    const all = Buffer.concat(mine)
    const chunkings: Array<[string, (k: number) => number]> = [['tiny', k => 1 + (k % 7)], ['64 KiB', () => 64 * 1024 + 3], ['whole', () => all.length]]
    for (const [name, size] of chunkings) {
      const chunks = async function * () {
        for (let at = 0, k = 0; at < all.length; k++) { const n = size(k); yield all.subarray(at, at + n); at += n }
      }
      const car = await readCar(chunks(), 2 * MIB)
      assert.deepEqual(car.roots.map(String), [root.toString()])
      n = 0
      let split = 0
      for await (const b of car.blocks) {
        assert.deepEqual(Buffer.from(contiguous(b.bytes)), Buffer.from(big.blocks.get(b.cid.toString())!), name)
        if (Array.isArray(b.bytes)) split++
        n++
      }
      assert.equal(n, 6, name)
      if (name === '64 KiB') assert.ok(split >= 3, `${split} blocks came in pieces`)
      // Tiny pieces (a sender splitting its data into tiny frames) are joined, not kept apart.
      if (name === 'whole' || name === 'tiny') assert.equal(split, 0, name)
    }
  })

  it('what the reference writer (@ipld/car) writes, narswarm reads', async () => {
    const { writer, out } = CarWriter.create([big.root])
    const sent = [...big.blocks].slice(0, 8)
    const writing = (async () => {
      for (const [cid, bytes] of sent) await writer.put({ cid: CID.parse(cid), bytes })
      await writer.close()
    })()
    const car = await readCar(out, 2 * MIB)
    assert.deepEqual(car.roots.map(String), [big.root.toString()])
    const got: string[] = []
    for await (const b of car.blocks) {
      assert.deepEqual(Buffer.from(contiguous(b.bytes)), Buffer.from(big.blocks.get(b.cid.toString())!))
      got.push(b.cid.toString())
    }
    await writing
    assert.deepEqual(got, sent.map(([cid]) => cid))
  })

  it('refuses malformed or oversized input with a FormatError', async () => {
    const some = [...big.blocks].find(([, b]) => b.length > 100_000)!
    const section = carSection({ cid: CID.parse(some[0]), bytes: some[1] })
    const cases: Array<[string, Uint8Array[]]> = [
      ['an empty stream', []],
      ['a huge header', [new Uint8Array([0xff, 0xff, 0x7f])]],
      ['a header that is not dag-cbor', [new Uint8Array([2, 0xff, 0xff])]],
      ['a section larger than the limit', [carHeader(big.root), ...section]],
      ['a section cut short', [carHeader(big.root), section[0], section[1].subarray(0, 10)]],
      ['a section without a CID', [carHeader(big.root), new Uint8Array([3, 9, 9, 9])]]
    ]
    for (const [what, parts] of cases) {
      await assert.rejects(async () => {
        const car = await readCar(toAsync(parts), 64 * 1024)
        for await (const _ of car.blocks) {}
      }, FormatError, what)
    }
  })
})

describe('trustless gateway answers', () => {
  it('a raw block, by ?format=raw or by Accept', async () => {
    const [cid, bytes] = [...big.blocks][3]!
    for (const [query, accept] of [['?format=raw', null], ['', 'application/vnd.ipld.raw']] as const) {
      const answer = await answerGatewayRequest('GET', new URL(`http://x/ipfs/${cid}${query}`), accept, localOf(big.blocks))
      assert.equal(answer.status, 200)
      assert.equal(answer.headers['content-type'], 'application/vnd.ipld.raw')
      assert.deepEqual(await collect(toAsync(answer.body!)), Buffer.from(bytes))
    }
  })

  it('a whole file as a depth-first CAR that rebuilds the file', async () => {
    const blocks = await carOf(big.root, big.blocks, '?format=car')
    assert.equal(blocks[0]!.cid.toString(), big.root.toString())
    assert.equal(decodeFileNode(big.root, blocks[0]!.bytes).pieces.length < 174, true)
    assert.equal(sha256Hex(leafBytes(blocks)), sha256Hex(big.bytes))
    assert.equal(blocks.length, big.blocks.size)
  })

  it('a byte range: the root, the interior nodes on the way, and only the leaves that overlap', async () => {
    const from = 20 * MIB + 12345
    const to = 21 * MIB
    const blocks = await carOf(big.root, big.blocks, `?format=car&dag-scope=entity&entity-bytes=${from}:${to}`)
    const whole = await carOf(big.root, big.blocks, '?format=car')
    assert.ok(blocks.length < 12, `${blocks.length} blocks`)
    assert.equal(blocks[0]!.cid.toString(), big.root.toString())
    assert.equal(blocks[1]!.cid.code, 0x70, 'an interior node comes before its leaves')
    // The leaves sent are consecutive leaves of the whole file, covering [from, to].
    const leaves = whole.filter(b => b.cid.code === 0x55)
    const first = leaves.findIndex(b => b.cid.equals(blocks.find(x => x.cid.code === 0x55)!.cid))
    const start = leaves.slice(0, first).reduce((n, b) => n + b.bytes.length, 0)
    const got = leafBytes(blocks)
    assert.ok(start <= from && start + got.length > to, `leaves cover ${start}..${start + got.length}`)
    assert.deepEqual(got, Buffer.from(big.bytes.subarray(start, start + got.length)))
    assert.deepEqual(parseEntityBytes('-10:*', 100), { from: 90, to: 99 })
    assert.equal(parseEntityBytes('5:2', 100), undefined)
  })

  it('sends a repeated block once, unless asked for dups=y', async () => {
    const zeros = Buffer.alloc(3 * MIB + 5)
    const { root, blocks } = await imported(zeros)
    const once = await carOf(root, blocks, '?format=car')
    const twice = await carOf(root, blocks, '', 'application/vnd.ipld.car; version=1; order=dfs; dups=y')
    assert.equal(new Set(once.map(b => b.cid.toString())).size, once.length)
    assert.ok(twice.length > once.length)
    assert.deepEqual(leafBytes(twice), zeros)
  })

  it('ends the CAR where this node\'s blocks end; 404 without the root', async () => {
    const partial = new Map(big.blocks)
    const leaves = [...partial.keys()].filter(k => CID.parse(k).code === 0x55)
    partial.delete(leaves[100]!)
    const blocks = await carOf(big.root, partial, '?format=car')
    assert.ok(blocks.length > 100 && blocks.length < big.blocks.size)
    const missing = await answerGatewayRequest('GET', new URL(`http://x/ipfs/${leaves[100]}?format=raw`), null, localOf(partial))
    assert.equal(missing.status, 404)
  })

  it('answers anything but a trustless request for a CID with the status the specification gives', async () => {
    const root = big.root.toString()
    const cases: Array<[string, string, string | null, number]> = [
      ['GET', `/ipfs/${root}`, 'text/html', 406],
      ['GET', `/ipfs/${root}?format=tar`, null, 406],
      ['GET', `/ipfs/${root}/sub/path?format=raw`, null, 400],
      ['GET', '/ipfs/not-a-cid?format=raw', null, 400],
      ['GET', `/ipfs/${root}?format=car&entity-bytes=0:10`, null, 400],
      ['GET', `/ipfs/${root}?format=car&dag-scope=entity&entity-bytes=x`, null, 400],
      ['GET', `/ipfs/${root}?format=car&dag-scope=everything`, null, 400],
      ['POST', `/ipfs/${root}?format=raw`, null, 405]
    ]
    for (const [method, path, accept, status] of cases) {
      const answer = await answerGatewayRequest(method, new URL(`http://x${path}`), accept, localOf(big.blocks))
      assert.equal(answer.status, status, `${method} ${path}`)
    }
    const head = await answerGatewayRequest('HEAD', new URL(`http://x/ipfs/${root}?format=car`), null, localOf(big.blocks))
    assert.equal(head.status, 200)
    assert.equal(head.body, undefined)
  })
})

describe('CAR feed', () => {
  /** A source over the real gateway code, recording the ranges asked for; `alter` changes its CAR. */
  function gatewaySource (blocks: Map<string, Uint8Array>, ranges: string[], alter?: (car: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>): CarSource {
    return {
      name: 'test',
      open: async (root, range, signal) => {
        ranges.push(`${range.from}:${range.to ?? '*'}`)
        const answer = await answerGatewayRequest('GET', new URL(`http://x/ipfs/${root}?format=car&dag-scope=entity&entity-bytes=${range.from}:${range.to ?? '*'}`), null, localOf(blocks))
        if (answer.status === 404) return undefined
        const body = toAsync(answer.body!)
        // Like a real stream, the answer ends when the signal it was opened with aborts.
        return honour(alter === undefined ? body : alter(body), signal)
      }
    }
  }

  async function * honour (body: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      signal.throwIfAborted()
      yield chunk
    }
  }

  /** Reads the whole file through a feed, as the embedded backend does; counts fallbacks. */
  async function readThrough (feed: CarFeed, root: CID, local: Map<string, Uint8Array>): Promise<{ bytes: Buffer, fallbacks: number }> {
    let fallbacks = 0
    const getBlock = async (cid: CID, o: { signal: AbortSignal, offset: number }): Promise<BlockBytes> => {
      const got = await feed.block(cid, o.offset, o.signal)
      if (got !== undefined) return got.bytes
      fallbacks++
      return big.blocks.get(cid.toString())! // stands in for bitswap
    }
    const rootBlock = await getBlock(root, { signal: new AbortController().signal, offset: 0 })
    const bytes = await collect(readFile(decodeFileNode(root, contiguous(rootBlock)), getBlock, { readAhead: 16 }))
    feed.close()
    await feed.settled()
    void local
    return { bytes, fallbacks }
  }

  function hooks (local: Map<string, Uint8Array>, stallMs?: number): ConstructorParameters<typeof CarFeed>[2] {
    return {
      local: localOf(local),
      store: async b => { local.set(b.cid.toString(), contiguous(b.bytes)) },
      log: silentLogger(),
      ...(stallMs === undefined ? {} : { stallMs })
    }
  }

  it('a fresh read takes every block from one stream, and stores them', async () => {
    const local = new Map<string, Uint8Array>()
    const ranges: string[] = []
    const feed = new CarFeed(big.root, [gatewaySource(big.blocks, ranges)], hooks(local))
    const { bytes, fallbacks } = await readThrough(feed, big.root, local)
    assert.equal(sha256Hex(bytes), sha256Hex(big.bytes))
    assert.equal(fallbacks, 0)
    assert.deepEqual(ranges, ['0:*'])
    assert.equal(local.size, big.blocks.size)
    assert.ok(feed.bytesReceived < big.bytes.length * 1.01)
  })

  it('with most blocks here, asks only for the ranges it lacks', async () => {
    const local = new Map(big.blocks)
    const leaves = [...local.keys()].filter(k => CID.parse(k).code === 0x55)
    let lacking = 0
    for (const i of [0, 1, 90, 91, 92, 150]) { lacking += local.get(leaves[i]!)!.length; local.delete(leaves[i]!) }
    const ranges: string[] = []
    const feed = new CarFeed(big.root, [gatewaySource(big.blocks, ranges)], hooks(local))
    const { bytes, fallbacks } = await readThrough(feed, big.root, local)
    assert.equal(sha256Hex(bytes), sha256Hex(big.bytes))
    assert.equal(fallbacks, 0)
    // The root's stream is open-ended (nothing is known yet) and dropped at the first block that is
    // here; every later one ends where the blocks that are here begin again.
    assert.equal(ranges[0], '0:*')
    assert.ok(ranges.length >= 3 && ranges.slice(1).every(r => !r.endsWith('*')), ranges.join(' '))
    assert.ok(feed.bytesReceived < lacking + 256 * 1024, `received ${feed.bytesReceived} for ${lacking} lacking bytes`)
  })

  it('never hands out a block that does not match its CID, and lets the caller fetch the rest', async () => {
    const local = new Map<string, Uint8Array>()
    let n = 0
    const corrupt = async function * (car: AsyncIterable<Uint8Array>) {
      for await (const chunk of car) yield ++n === 41 && chunk.length > 1000 ? Buffer.from(chunk).fill(1, 0, 100) : chunk
    }
    const feed = new CarFeed(big.root, [gatewaySource(big.blocks, [], corrupt)], hooks(local))
    const { bytes, fallbacks } = await readThrough(feed, big.root, local)
    assert.equal(sha256Hex(bytes), sha256Hex(big.bytes))
    assert.ok(fallbacks > 0)
    for (const [cid, block] of local) assert.deepEqual(Buffer.from(block), Buffer.from(big.blocks.get(cid)!), 'only verified blocks are stored')
  })

  it('a stream that is cut off, sends other blocks, or stalls, gives way to the caller', async () => {
    const cut = async function * (car: AsyncIterable<Uint8Array>) {
      let sent = 0
      for await (const chunk of car) { if ((sent += chunk.length) > 5 * MIB) return; yield chunk }
    }
    const other = [...big.blocks].find(([k]) => k !== big.root.toString() && CID.parse(k).code === 0x55)!
    const stranger = async function * (car: AsyncIterable<Uint8Array>) {
      const it = car[Symbol.asyncIterator]()
      yield (await it.next()).value as Uint8Array // the header
      yield * carSection({ cid: CID.parse(other[0]), bytes: other[1] })
    }
    const stall = async function * (car: AsyncIterable<Uint8Array>) {
      let sent = 0
      for await (const chunk of car) {
        if ((sent += chunk.length) > MIB) await new Promise(resolve => setTimeout(resolve, 2_000))
        yield chunk
      }
    }
    for (const [what, alter] of [['cut off', cut], ['another block', stranger], ['stalled', stall]] as const) {
      const local = new Map<string, Uint8Array>()
      const feed = new CarFeed(big.root, [gatewaySource(big.blocks, [], alter)], hooks(local, 300))
      const { bytes, fallbacks } = await readThrough(feed, big.root, local)
      assert.equal(sha256Hex(bytes), sha256Hex(big.bytes), what)
      assert.ok(fallbacks > 0, what)
    }
  })

  it('a stream slower in total than the stall limit, but never stalling, is kept to the end', async () => {
    const small = randomBytes(4 * MIB)
    const { root, blocks } = await imported(small)
    const slow = async function * (car: AsyncIterable<Uint8Array>) {
      for await (const chunk of car) { await new Promise(resolve => setTimeout(resolve, 25)); yield chunk }
    }
    const local = new Map<string, Uint8Array>()
    const feed = new CarFeed(root, [gatewaySource(blocks, [], slow)], hooks(local, 200))
    const getBlock = async (cid: CID, o: { signal: AbortSignal, offset: number }): Promise<BlockBytes> => {
      const got = await feed.block(cid, o.offset, o.signal)
      assert.ok(got !== undefined, 'the stream was not given up')
      return got.bytes
    }
    const started = performance.now()
    const rootBlock = await getBlock(root, { signal: AbortSignal.timeout(200), offset: 0 })
    const bytes = await collect(readFile(decodeFileNode(root, contiguous(rootBlock)), getBlock, { readAhead: 16 }))
    feed.close()
    assert.ok(performance.now() - started > 400, 'the stream took longer than twice the stall limit')
    assert.equal(sha256Hex(bytes), sha256Hex(small))
  })

  it('a source without the file is passed over for the next one', async () => {
    const ranges: string[] = []
    const local = new Map<string, Uint8Array>()
    const feed = new CarFeed(big.root, [gatewaySource(new Map(), []), gatewaySource(big.blocks, ranges)], hooks(local))
    const { bytes, fallbacks } = await readThrough(feed, big.root, local)
    assert.equal(sha256Hex(bytes), sha256Hex(big.bytes))
    assert.equal(fallbacks, 0)
    assert.deepEqual(ranges, ['0:*'])
  })
})
