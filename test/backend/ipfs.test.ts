/**
 * The embedded IPFS backend (`ipfs:`): the spec table, the backend compliance suite on one node,
 * and two nodes on 127.0.0.1 exchanging NARs over bitswap — the bytes arrive intact, content-defined
 * chunking lets a changed NAR reuse the blocks of its predecessor, a CID nobody provides is a
 * timeout (never absence), and the node keeps its peer id across restarts.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { ConfigError, IntegrityError, UpstreamError } from '../../src/errors.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { createLogger } from '../../src/log.ts'
import { plugin } from '../../src/backend/ipfs/plugin.ts'
import { importNar } from '../../src/backend/ipfs/publish.ts'
import { cidOf, locatorOf } from '../../src/backend/ipfs/locator.ts'
import { PUBLIC_BOOTSTRAP, type IpfsInit } from '../../src/backend/ipfs/spec.ts'
import { embeddedNode } from '../helpers/ipfs.ts'
import { tempDir } from '../helpers/temp.ts'
import { PeerGateways, peerGatewayBases } from '../../src/backend/ipfs/http-gateway.ts'
import type { EmbeddedIpfsBackend } from '../../src/backend/ipfs/embedded.ts'
import { chunks, sha256Hex, sourceDigest, upload } from '../helpers/bytes.ts'

const MIB = 1 << 20

/** A CID in the ipfs scheme that cannot name a file (dag-cbor): the backend knows it holds no NAR. */
const NOT_A_FILE = `ipfs://${CID.create(1, 0x71, await sha256.digest(new Uint8Array([1, 2, 3]))).toString()}`

describe('ipfs backend: specs', () => {
  const fetch = { timeout: 30_000, stallTimeout: 60_000, readAhead: 16 }
  const embedded = { kind: 'embedded', path: 'ipfs', announceBatch: 8, announceInterval: 10_000, libp2pGateway: true, gatewayListen: [], fetchHttp: true, ...fetch }
  const valid: Array<[string, IpfsInit]> = [
    ['ipfs:', { ...embedded, listen: ['/ip4/0.0.0.0/tcp/4001', '/ip6/::/tcp/4001'], bootstrap: PUBLIC_BOOTSTRAP, routing: 'dht-client', announce: true } as IpfsInit],
    ['ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none&bootstrap=/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWNy4ifXZJ5by3uz9A9R9cwkEmMxQxcTeMneoYAbaz133s',
      { ...embedded, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: ['/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWNy4ifXZJ5by3uz9A9R9cwkEmMxQxcTeMneoYAbaz133s'], routing: 'none', announce: false } as IpfsInit],
    ['ipfs:?routing=lan-dht&listen=/ip4/192.168.1.5/tcp/4001&announce-batch=2&announce-interval=1m&path=/srv/ipfs&timeout=5s&stall-timeout=10s&read-ahead=4',
      { ...embedded, path: '/srv/ipfs', listen: ['/ip4/192.168.1.5/tcp/4001'], bootstrap: [], routing: 'lan-dht', announce: true, announceBatch: 2, announceInterval: 60_000, timeout: 5000, stallTimeout: 10_000, readAhead: 4 } as IpfsInit],
    ['ipfs:?routing=dht-server&announce=false&libp2p-gateway=false', { ...embedded, listen: ['/ip4/0.0.0.0/tcp/4001', '/ip6/::/tcp/4001'], bootstrap: PUBLIC_BOOTSTRAP, routing: 'dht-server', announce: false, libp2pGateway: false } as IpfsInit],
    ['ipfs:?routing=none&gateway-listen=/ip4/0.0.0.0/tcp/4002,/ip6/::/tcp/4002&fetch-http=false', { ...embedded, listen: ['/ip4/0.0.0.0/tcp/4001', '/ip6/::/tcp/4001'], bootstrap: [], routing: 'none', announce: false, gatewayListen: ['/ip4/0.0.0.0/tcp/4002', '/ip6/::/tcp/4002'], fetchHttp: false } as IpfsInit],
    ['ipfs+http://127.0.0.1:5001', { kind: 'kubo', api: 'http://127.0.0.1:5001', pin: true, ...fetch }],
    ['ipfs+https://kubo.example/?pin=false&timeout=1m', { kind: 'kubo', api: 'https://kubo.example', pin: false, ...fetch, timeout: 60_000 }],
    ['ipfs+gateway+https://gw.example', { kind: 'gateway', base: 'https://gw.example/', ...fetch }],
    ['ipfs+gateway+http://127.0.0.1:8080/sub?read-ahead=32', { kind: 'gateway', base: 'http://127.0.0.1:8080/sub/', ...fetch, readAhead: 32 }]
  ]
  for (const [spec, want] of valid) {
    it(`parses ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), want))
  }

  const invalid: Array<[string, RegExp]> = [
    ['ipfs:?colour=blue', /unknown option 'colour'/],
    ['ipfs:?routing=gossip', /routing must be one of none, dht-client, dht-server, lan-dht/],
    ['ipfs:?listen=/ip4/127.0.0.1/udp/4001/quic', /listen address .* must be a TCP multiaddr/],
    ['ipfs:?listen=', /listen must name at least one address/],
    ['ipfs:?gateway-listen=127.0.0.1:4002', /gateway-listen address '127.0.0.1:4002' must be a TCP multiaddr such as \/ip4\/0.0.0.0\/tcp\/4002/],
    ['ipfs:?bootstrap=/ip4/127.0.0.1/tcp/4001', /bootstrap peer .* must be a multiaddr ending in \/p2p/],
    ['ipfs:?routing=none&announce=true', /announce=true needs a routing/],
    ['ipfs:?announce=maybe', /announce must be true or false/],
    ['ipfs:?announce-batch=0', /announce-batch must be greater than 0/],
    ['ipfs:?announce-interval=soon', /announce-interval must be a duration/],
    ['ipfs:?timeout=0', /timeout must be greater than 0/],
    ['ipfs:?read-ahead=many', /read-ahead must be an integer/],
    ['ipfs:?path=', /path must not be empty/],
    ['ipfs:?routing=none&routing=dht-client', /given twice/],
    ['ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', /takes options only/],
    ['ipfs+http://127.0.0.1:5001?routing=none', /unknown option 'routing' for ipfs\+http:/],
    ['ipfs+http://user:secret@127.0.0.1:5001', /must not carry credentials/],
    ['ipfs+gateway+https://gw.example/?pin=true', /unknown option 'pin' for ipfs\+gateway:/],
    ['ipfs+ftp://x/', /unknown scheme 'ipfs\+ftp:'/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => {
      assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message))
    })
  }
})

describe('ipfs peer gateways over plain HTTP', () => {
  it('are used only on the address the peer is connected from', () => {
    const announced = ['/ip4/192.168.1.5/tcp/4002/http', '/ip4/10.0.0.1/tcp/80/http', '/ip4/192.168.1.5/tcp/4001', '/ip6/fd00::5/tcp/4002/http', '/ip4/192.168.1.5/tcp/4003/tls/http']
    assert.deepEqual(peerGatewayBases(announced, '192.168.1.5'), ['http://192.168.1.5:4002/'])
    assert.deepEqual(peerGatewayBases(announced, 'fd00::5'), ['http://[fd00::5]:4002/'])
    assert.deepEqual(peerGatewayBases(announced, '172.16.0.9'), [])
  })

  it('one that failed is left alone for a minute', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
    const gateways = new PeerGateways()
    try {
      const base = 'http://192.168.1.5:4002/'
      assert.ok(gateways.usable(base))
      gateways.failed(base)
      assert.ok(!gateways.usable(base))
      assert.ok(gateways.usable('http://192.168.1.6:4002/'))
      t.mock.timers.tick(59_000)
      assert.ok(!gateways.usable(base))
      t.mock.timers.tick(1_000)
      assert.ok(gateways.usable(base))
    } finally {
      await gateways.close()
    }
  })

  it('a gateway-listen address that is taken is one ConfigError at start-up', async () => {
    const taken = createServer()
    taken.listen(0, '127.0.0.1')
    await once(taken, 'listening')
    const port = (taken.address() as { port: number }).port
    try {
      await assert.rejects(embeddedNode(`gateway-listen=/ip4/127.0.0.1/tcp/${port}`, await tempDir()), (err: unknown) => err instanceof ConfigError && /the HTTP gateway cannot listen \(gateway-listen \/ip4\/127\.0\.0\.1\/tcp\/\d+\): .*EADDRINUSE/.test(err.message))
    } finally {
      taken.close()
    }
  })
})

describe('ipfs import parameters (part of the index format)', () => {
  /** Bytes anyone can make again: SHA-256 of 'narswarm 0', 'narswarm 1', … back to back. */
  function fixedBytes (n: number): Buffer {
    const parts: Buffer[] = []
    for (let i = 0; parts.length * 32 < n; i++) parts.push(createHash('sha256').update(`narswarm ${i}`).digest())
    return Buffer.concat(parts).subarray(0, n)
  }

  // Pinned: a change of chunker, layout, leaf or CID options changes these, and with them every
  // locator published afterwards. The empty NAR's CID is the well-known empty raw block.
  for (const [size, cid, blocks] of [
    [0, 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', 1],
    [1000, 'bafkreihetlk2tmah6gwlvfm5pwfootfavwaqb3qjd7c6kz3h4kr2445uee', 1],
    [3 << 20, 'bafybeicftq523ahdc4i3ylaldgntjjmbqzrk5oz2b5limc26gjaz7vvbhy', 10]
  ] as const) {
    it(`a ${size}-byte NAR imports to ${cid} in ${blocks} block(s)`, async () => {
      const bytes = fixedBytes(size)
      const written: string[] = []
      const root = await importNar(upload(bytes), { put: async (c: CID) => { written.push(c.toString()); return c } })
      assert.equal(root.toString(), cid)
      assert.equal(new Set(written).size, blocks)
    })
  }
})

describe('ipfs locators', () => {
  it('are ipfs://<CIDv1 base32>; ipfs:<cid> and CIDv0 are read as the same root', async () => {
    const v0 = CID.createV0(await sha256.digest(new Uint8Array([7])))
    assert.equal(locatorOf(v0), `ipfs://${v0.toV1().toString()}`)
    assert.ok(cidOf(`ipfs:${v0.toString()}`)?.equals(v0))
    assert.ok(cidOf(locatorOf(v0))?.toV1().equals(v0.toV1()))
  })
  it('anything else is not an IPFS file locator', () => {
    for (const url of ['https://x/ipfs/bafy', 'ipfs://not-a-cid', 'ipns://example.org', NOT_A_FILE, 'ipfs://bafkqaaa']) {
      assert.equal(cidOf(url), undefined, url)
    }
  })
})

/**
 * The three ways node B fetches: CAR streams from A's gateway over plain HTTP (when A serves one),
 * over libp2p (the default), or bitswap.
 */
const TRANSPORTS = [
  {
    name: 'CAR streams over plain HTTP',
    options: 'gateway-listen=/ip4/127.0.0.1/tcp/0',
    check: (b: EmbeddedIpfsBackend, a: EmbeddedIpfsBackend) => {
      assert.equal(b.carBytes, b.networkBytes, 'every byte came in CAR streams')
      assert.ok(a.gatewayAnswers > 0, 'from A\'s HTTP gateway')
    }
  },
  {
    name: 'CAR streams over libp2p',
    // A serves an HTTP gateway too; B does not use it.
    options: 'gateway-listen=/ip4/127.0.0.1/tcp/0&fetch-http=false',
    check: (b: EmbeddedIpfsBackend, a: EmbeddedIpfsBackend) => {
      assert.equal(b.carBytes, b.networkBytes, 'every byte came in CAR streams')
      assert.equal(a.gatewayAnswers, 0)
    }
  },
  { name: 'bitswap', options: 'libp2p-gateway=false', check: (b: EmbeddedIpfsBackend) => assert.equal(b.carBytes, 0, 'no CAR stream was used') }
]

for (const mode of TRANSPORTS) {
  describe(`ipfs backend: two nodes on 127.0.0.1, ${mode.name}`, () => {
    it('node B fetches what node A published, streaming, and keeps the blocks', async () => {
      const a = await embeddedNode(mode.options, await tempDir())
      const b = await embeddedNode(`${mode.options}&bootstrap=${a.multiaddrs[0]}`, await tempDir())
      try {
        const bytes = randomBytes(20 * MIB)
        const locator = await a.publish(upload(bytes))
        assert.match(locator.url, /^ipfs:\/\/bafybei[a-z2-7]+$/)
        assert.deepEqual({ compression: locator.compression, fileSize: locator.fileSize }, { compression: 'none', fileSize: bytes.length })
        const source = await b.open(locator)
        assert.ok(source !== undefined)
        assert.equal(source.fileSize, bytes.length)
        assert.equal(await sourceDigest(source), sha256Hex(bytes))
        const fetched = b.networkBytes
        assert.ok(fetched >= bytes.length, `B fetched ${fetched} bytes`)
        mode.check(b, a)
        // A second read is served from B's own blockstore.
        assert.equal(await sourceDigest((await b.open(locator))!), sha256Hex(bytes))
        assert.equal(b.networkBytes, fetched)
      } finally {
        await b.close()
        await a.close()
      }
    })

    it('a NAR that differs by a few bytes near its start transfers only the blocks it lacks', async () => {
      const a = await embeddedNode(mode.options, await tempDir())
      const b = await embeddedNode(`${mode.options}&bootstrap=${a.multiaddrs[0]}`, await tempDir())
      try {
        const v1 = randomBytes(16 * MIB)
        // v2: a store path rewritten 1 KiB in, and 100 bytes inserted at 5 MiB.
        const v2 = Buffer.concat([v1.subarray(0, 1024), Buffer.from('x'.repeat(32)), v1.subarray(1056, 5 * MIB), randomBytes(100), v1.subarray(5 * MIB)])
        const [l1, l2] = [await a.publish(upload(v1)), await a.publish(upload(v2))]
        assert.notEqual(l1.url, l2.url)
        assert.equal(await sourceDigest((await b.open(l1))!), sha256Hex(v1))
        const before = b.networkBytes
        assert.equal(await sourceDigest((await b.open(l2))!), sha256Hex(v2))
        const second = b.networkBytes - before
        assert.ok(second < v2.length * 0.25, `the second version moved ${second} of ${v2.length} bytes`)
      } finally {
        await b.close()
        await a.close()
      }
    })

    it('streams: the first bytes come before the file is fetched, and the rest only from the peer', async () => {
      const a = await embeddedNode(mode.options, await tempDir())
      const b = await embeddedNode(`${mode.options}&bootstrap=${a.multiaddrs[0]}&stall-timeout=2s`, await tempDir())
      try {
        const bytes = randomBytes(64 * MIB)
        const source = await b.open(await a.publish(upload(bytes)))
        assert.ok(source !== undefined)
        const reader = source.body[Symbol.asyncIterator]()
        const first = await reader.next()
        assert.ok(first.done !== true && first.value.length > 0)
        // With A gone, B cannot finish: it had not fetched the file before handing out its start.
        await a.close()
        await assert.rejects(async () => { for (let r = await reader.next(); r.done !== true; r = await reader.next()); }, UpstreamError)
      } finally {
        await b.close()
        await a.close()
      }
    })

    it('a CID that no peer provides fails as a timeout, not as absence', async () => {
      const a = await embeddedNode(mode.options, await tempDir())
      const b = await embeddedNode(`${mode.options}&bootstrap=${a.multiaddrs[0]}&timeout=500ms`, await tempDir())
      try {
        const nowhere = `ipfs://${CID.createV1(0x55, await sha256.digest(randomBytes(32))).toString()}`
        await assert.rejects(b.open({ url: nowhere, compression: 'none' }), (err: unknown) => err instanceof UpstreamError && err.timeout)
      } finally {
        await b.close()
        await a.close()
      }
    })
  })
}

describe('ipfs backend: one node', () => {
  it('refuses to publish bytes that do not match NarHash or NarSize', async () => {
    const a = await embeddedNode('', await tempDir())
    try {
      const bytes = randomBytes(3 * MIB)
      await assert.rejects(a.publish({ narHash: NixHash.of('sha256', 'other'), narSize: bytes.length, body: chunks(bytes) }), IntegrityError)
      await assert.rejects(a.publish({ narHash: NixHash.of('sha256', bytes), narSize: bytes.length + 1, body: chunks(bytes) }), IntegrityError)
    } finally {
      await a.close()
    }
  })

  it('keeps its peer id across restarts, and logs it with its addresses', async () => {
    const dir = await tempDir()
    const first = await embeddedNode('', dir)
    const id = first.multiaddrs[0]!.split('/p2p/')[1]
    await first.close()
    const lines: string[] = []
    const sink = new Writable({ write (chunk, _encoding, done) { lines.push(...String(chunk).split('\n').filter(Boolean)); done() } })
    const second = await plugin.create(plugin.parse(new URL('ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none')), { log: createLogger('info', sink), stateDir: dir }) as EmbeddedIpfsBackend
    try {
      assert.equal(second.multiaddrs[0]!.split('/p2p/')[1], id)
      const listening = lines.map(l => JSON.parse(l) as { msg: string, peerId?: string, addresses?: string[] }).find(l => l.msg === 'ipfs node listening')
      assert.ok(listening !== undefined, 'the node logs that it listens')
      assert.equal(listening.peerId, id)
      assert.deepEqual(listening.addresses, second.multiaddrs)
    } finally {
      await second.close()
    }
  })

  it('a listen address that is taken is one ConfigError at start-up', async () => {
    const blocker = createServer().listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    const port = (blocker.address() as { port: number }).port
    try {
      await assert.rejects(plugin.create(plugin.parse(new URL(`ipfs:?listen=/ip4/127.0.0.1/tcp/${port}&routing=none`)), { log: (await import('../../src/log.ts')).silentLogger(), stateDir: await tempDir() }),
        (err: unknown) => err instanceof ConfigError && /cannot start/.test(err.message))
    } finally {
      blocker.close()
    }
  })
})
