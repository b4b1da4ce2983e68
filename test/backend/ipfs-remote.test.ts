/**
 * The IPFS backends that talk to another program: a trustless gateway (`ipfs+gateway+http://`),
 * run against a small gateway in this test that serves raw blocks from an embedded node, and kubo
 * (`ipfs+http://`), run against a stub of kubo's RPC API (kubo cannot be installed here) and, when
 * TEST_KUBO_API names a real daemon's API, through the compliance suite.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import * as dagPb from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { ConfigError, IntegrityError, UpstreamError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { plugin } from '../../src/backend/ipfs/plugin.ts'
import { cidOf } from '../../src/backend/ipfs/locator.ts'
import type { EmbeddedIpfsBackend } from '../../src/backend/ipfs/embedded.ts'
import type { Backend } from '../../src/types.ts'
import { embeddedNode, startGateway, type TestGateway } from '../helpers/ipfs.ts'
import { freePort } from '../helpers/net.ts'
import { sha256Hex, sourceDigest, upload } from '../helpers/bytes.ts'

const MIB = 1 << 20
const dir = await mkdtemp(join(tmpdir(), 'narswarm-ipfs-remote-'))
const components = { log: silentLogger(), stateDir: dir }
async function open (spec: string): Promise<Backend> {
  return await plugin.create(plugin.parse(new URL(spec)), components)
}

let node: EmbeddedIpfsBackend
let gateway: TestGateway
before(async () => {
  node = await embeddedNode('', join(dir, 'node'))
  gateway = await startGateway(node)
})
after(async () => {
  await gateway?.close()
  await node?.close()
  await rm(dir, { recursive: true, force: true })
})

describe('ipfs gateway backend: answers and failures', () => {
  it('reads a multi-block NAR as one CAR stream', async () => {
    const bytes = randomBytes(6 * MIB)
    const locator = await node.publish(upload(bytes))
    const backend = await open(`ipfs+gateway+${gateway.url}`)
    gateway.requests.length = 0
    assert.equal(await sourceDigest((await backend.open(locator))!), sha256Hex(bytes))
    assert.equal(gateway.requests.length, 1, gateway.requests.join(' '))
    assert.match(gateway.requests[0]!, /\?format=car&dag-scope=entity&entity-bytes=0:\*$/)
  })

  it('reads block by block, as raw blocks, from a gateway that refuses CAR', async () => {
    const bytes = randomBytes(6 * MIB)
    const locator = await node.publish(upload(bytes))
    const backend = await open(`ipfs+gateway+${gateway.url}`)
    gateway.requests.length = 0
    gateway.car = 'refuse'
    try {
      assert.equal(await sourceDigest((await backend.open(locator))!), sha256Hex(bytes))
    } finally {
      gateway.car = 'serve'
    }
    assert.ok(gateway.requests.length > 6, `${gateway.requests.length} requests`)
    assert.equal(gateway.requests.filter(r => r.includes('format=car')).length, 1, 'CAR is asked for once, then blocks')
  })

  for (const [what, how] of [['a CAR stream with a flipped byte', { flipAt: 3 * MIB }], ['a CAR stream cut off', { cutAt: 3 * MIB }]] as const) {
    it(`${what} is left for raw blocks from where it went wrong, and the NAR is still right`, async () => {
      const bytes = randomBytes(6 * MIB)
      const locator = await node.publish(upload(bytes))
      const backend = await open(`ipfs+gateway+${gateway.url}`)
      gateway.requests.length = 0
      gateway.car = how
      try {
        assert.equal(await sourceDigest((await backend.open(locator))!), sha256Hex(bytes))
      } finally {
        gateway.car = 'serve'
      }
      const raw = gateway.requests.filter(r => r.endsWith('?format=raw')).length
      assert.ok(raw > 0 && raw < 20, `${raw} raw block requests after the CAR stream failed: ${gateway.requests.join(' ')}`)
    })
  }

  it('a root the gateway does not have (404) is absent', async () => {
    const backend = await open(`ipfs+gateway+${gateway.url}`)
    const unknown = `ipfs://${CID.createV1(0x55, await sha256.digest(randomBytes(8))).toString()}`
    assert.equal(await backend.open({ url: unknown, compression: 'none' }), undefined)
  })

  it('a 5xx, a refused connection and a missing inner block are failures, not absence', async () => {
    const bytes = randomBytes(3 * MIB)
    const locator = await node.publish(upload(bytes))
    const root = cidOf(locator.url)!.toString()
    const backend = await open(`ipfs+gateway+${gateway.url}`)
    gateway.faults.set(root, { status: 504 })
    await assert.rejects(backend.open(locator), (err: unknown) => err instanceof UpstreamError && err.status === 504)
    gateway.faults.clear()
    const dead = await open(`ipfs+gateway+http://127.0.0.1:${await freePort()}/`)
    await assert.rejects(dead.open(locator), UpstreamError)
    // The root is there but a leaf is not (read block by block): the body fails.
    gateway.car = 'refuse'
    try {
      const source = await backend.open(locator)
      const links = dagPb.decode((await node.localBlock(cidOf(locator.url)!))!).Links
      gateway.faults.set(links[1]!.Hash.toString(), { status: 404 })
      await assert.rejects(sourceDigest(source!), UpstreamError)
    } finally {
      gateway.car = 'serve'
      gateway.faults.clear()
    }
  })

  it('a block that does not match its CID is an IntegrityError', async () => {
    const bytes = randomBytes(3 * MIB)
    const locator = await node.publish(upload(bytes))
    const backend = await open(`ipfs+gateway+${gateway.url}`)
    gateway.faults.set(cidOf(locator.url)!.toString(), { bytes: randomBytes(100) })
    await assert.rejects(backend.open(locator), IntegrityError)
    gateway.faults.clear()
  })
})

/** A stub of kubo's RPC API: id, block/get, block/put (multipart), pin/add, over a Map. */
async function startKuboStub (): Promise<{ url: string, blocks: Map<string, Uint8Array>, pins: string[], tamper: Set<string>, close: () => Promise<void> }> {
  const blocks = new Map<string, Uint8Array>()
  const pins: string[] = []
  const tamper = new Set<string>()
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const parts: Buffer[] = []
    req.on('data', (c: Buffer) => parts.push(c))
    req.on('end', () => {
      void (async () => {
        const json = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
        if (req.method !== 'POST') return json(405, { Message: 'POST only', Code: 0, Type: 'error' })
        const arg = url.searchParams.get('arg')
        switch (url.pathname) {
          case '/api/v0/id':
            return json(200, { ID: '12D3KooWNy4ifXZJ5by3uz9A9R9cwkEmMxQxcTeMneoYAbaz133s', AgentVersion: 'kubo/stub', Addresses: [], Protocols: [] })
          case '/api/v0/block/get': {
            const block = blocks.get(CID.parse(arg!).toV1().toString())
            if (block === undefined) return json(500, { Message: 'block was not found locally (offline)', Code: 0, Type: 'error' })
            const out = tamper.has(CID.parse(arg!).toV1().toString()) ? randomBytes(block.length) : block
            res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(out)
            return
          }
          case '/api/v0/block/put': {
            const body = Buffer.concat(parts)
            const boundary = /boundary=(.+)$/.exec(req.headers['content-type'] ?? '')![1]!
            const start = body.indexOf('\r\n\r\n') + 4
            const end = body.lastIndexOf(`\r\n--${boundary}`)
            const data = body.subarray(start, end)
            const codec = url.searchParams.get('cid-codec') === 'dag-pb' ? 0x70 : 0x55
            const cid = CID.createV1(codec, await sha256.digest(data))
            blocks.set(cid.toString(), new Uint8Array(data))
            return json(200, { Key: cid.toString(), Size: data.length })
          }
          case '/api/v0/pin/add':
            pins.push(arg!)
            return json(200, { Pins: [arg] })
          default:
            return json(404, { Message: `unknown command ${url.pathname}`, Code: 0, Type: 'error' })
        }
      })()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    blocks,
    pins,
    tamper,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}

describe('ipfs+http (kubo RPC), against a stub of the API', () => {
  let stub: Awaited<ReturnType<typeof startKuboStub>>
  before(async () => { stub = await startKuboStub() })
  after(async () => { await stub?.close() })

  it('publishes with block/put and pins the root; the CID equals the embedded node\'s', async () => {
    const backend = await open(`ipfs+${stub.url}`)
    const bytes = randomBytes(5 * MIB)
    const locator = await backend.publish!(upload(bytes))
    assert.equal(locator.url, (await node.publish(upload(bytes))).url)
    assert.deepEqual(stub.pins, [cidOf(locator.url)!.toString()])
    assert.ok(stub.blocks.size > 5)
    assert.equal(await sourceDigest((await backend.open(locator))!), sha256Hex(bytes))
  })

  it('pin=false does not pin', async () => {
    const backend = await open(`ipfs+${stub.url}?pin=false`)
    const before = stub.pins.length
    await backend.publish!(upload(randomBytes(1000)))
    assert.equal(stub.pins.length, before)
  })

  it('checks what the daemon returns against the CID', async () => {
    const backend = await open(`ipfs+${stub.url}`)
    const bytes = randomBytes(2 * MIB)
    const locator = await backend.publish!(upload(bytes))
    const source = await backend.open(locator)
    const links = dagPb.decode(stub.blocks.get(cidOf(locator.url)!.toString())!).Links
    stub.tamper.add(links.at(-1)!.Hash.toString())
    try {
      await assert.rejects(sourceDigest(source!), IntegrityError)
    } finally {
      stub.tamper.clear()
    }
  })

  it('a block the daemon cannot find is a failure (kubo says 500), never absence', async () => {
    const backend = await open(`ipfs+${stub.url}`)
    const unknown = `ipfs://${CID.createV1(0x55, await sha256.digest(randomBytes(8))).toString()}`
    await assert.rejects(backend.open({ url: unknown, compression: 'none' }), UpstreamError)
  })

  it('an API address where nothing answers is one ConfigError at start-up', async () => {
    const port = await freePort()
    await assert.rejects(open(`ipfs+http://127.0.0.1:${port}`), (err: unknown) => err instanceof ConfigError && /no kubo RPC API answers/.test(err.message))
  })
})
