/**
 * The torrent backend in one process: the backend compliance suite, the spec table, the torrent
 * format (deterministic info hashes), and two or three clients on 127.0.0.1 with a tracker started
 * here (no DHT, no local discovery, no port mapping, nothing outside loopback): a NAR published by
 * one is fetched by another from the swarm, from the web seed alone when no peer is online, fails
 * as a timeout when nobody has it, and is seeded again after a restart (what it published always,
 * what it fetched within the seeding cap).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, FormatError, IntegrityError, UpstreamError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin, type TorrentBackend, type TorrentInit } from '../../src/backend/torrent/index.ts'
import { TORRENT_DEFAULTS, TORRENT_OPTIONS } from '../../src/backend/torrent/spec.ts'
import { parseMagnet } from '../../src/backend/torrent/magnet.ts'
import { formatAnnounce, parseAnnounce } from '../../src/backend/torrent/lsd.ts'
import { bdecode, bencode, type BValue } from '../../src/backend/torrent/bencode.ts'
import { infoHashOf, PieceHasher, parseTorrentFile, torrentFile } from '../../src/backend/torrent/metainfo.ts'
import type { NarSource } from '../../src/types.ts'
import { loopbackTorrentSpec, startTrackerOrSkip } from '../helpers/torrent-tracker.ts'
import { startCacheServer } from '../helpers/cache-server.ts'
import { startRangeServer } from '../helpers/range-server.ts'
import { chunks, collect, sha256Hex, upload } from '../helpers/bytes.ts'

const root = await mkdtemp(join(tmpdir(), 'narswarm-torrent-'))
const { tracker, skip } = await startTrackerOrSkip()
if (skip !== false) console.log(`# skipping torrent tests: ${skip}`)
after(async () => {
  await tracker?.close()
  await rm(root, { recursive: true, force: true })
})

let n = 0
const offline = (extra = ''): string => loopbackTorrentSpec(tracker, extra)
async function open (spec: string, stateDir?: string): Promise<TorrentBackend> {
  const dir = stateDir ?? join(root, `node-${n++}`)
  return await plugin.create(plugin.parse(new URL(spec)), { log: silentLogger(), stateDir: dir }) as TorrentBackend
}
async function drain (source: NarSource | undefined): Promise<Buffer> {
  assert.ok(source !== undefined)
  return await collect(source.body)
}
const sha = sha256Hex

describe('torrent backend: specs', () => {
  const d = TORRENT_DEFAULTS
  const valid: Array<[string, Partial<TorrentInit>]> = [
    ['torrent:', {}],
    ['torrent:?dht=false&port=0&utp=false', { dht: false, port: 0, utp: false }],
    ['torrent:///srv/t/?tracker=udp://t.example:6969&tracker=http://u.example/announce',
      { directory: '/srv/t', trackers: ['udp://t.example:6969', 'http://u.example/announce'] }],
    ['torrent:?upload-limit=1MiB&download-limit=2M&max-seeds=5&reseed=false', { uploadLimit: 1 << 20, downloadLimit: 2 << 20, maxSeeds: 5, reseed: false }],
    ['torrent:?web-seed=https://cache.example/nix&piece-length=256KiB&piece-order=rarest', { webSeeds: ['https://cache.example/nix/'], pieceLength: 256 * 1024, pieceOrder: 'rarest' }],
    ['torrent:?metadata-timeout=2s&stall-timeout=1m&lsd=0&pex=false&nat=true&upload-limit=unlimited',
      { metadataTimeout: 2000, stallTimeout: 60_000, lsd: false, pex: false, nat: true, uploadLimit: -1 }]
  ]
  for (const [spec, want] of valid) {
    it(`parses ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), { ...d, ...want }))
  }

  it("docs/torrent.md's table lists every option, with the defaults the parser has", async () => {
    const doc = await readFile(new URL('../../docs/torrent.md', import.meta.url), 'utf8')
    const rows = [...doc.matchAll(/^\| `([a-z-]+)` \| ([^|]+) \|/gm)].map(m => ({ key: m[1]!, value: m[2]!.trim() }))
    assert.deepEqual(rows.map(r => r.key).sort(), [...TORRENT_OPTIONS].sort())
    let compared = 0
    for (const { key, value } of rows) {
      // The defaults that are written as the parser holds them (not sizes and durations).
      const field = (d as unknown as Record<string, unknown>)[key.replace(/-(.)/g, (_, c: string) => c.toUpperCase())]
      if (!['boolean', 'string'].includes(typeof field) && !/^`\d+`$/.test(value)) continue
      assert.equal(value, `\`${String(field)}\``, key)
      compared++
    }
    assert.ok(compared >= 10, `${compared} defaults compared`)
  })
  const invalid: Array<[string, RegExp]> = [
    ['torrent:?colour=blue', /unknown option 'colour'/],
    ['torrent:?dht=maybe', /dht must be true or false/],
    ['torrent:?port=70000', /port must be between 0 and 65535/],
    ['torrent:?port=6881&port=6882', /port is given twice/],
    ['torrent:?upload-limit=fast', /upload-limit .*must be a byte count/],
    ['torrent:?download-limit=0', /download-limit must be more than zero/],
    ['torrent:?max-seeds=0', /max-seeds must be at least 1/],
    ['torrent:?max-seeds=many', /max-seeds must be an integer/],
    ['torrent:?reseed=yes', /reseed must be true or false/],
    ['torrent:?piece-length=1000000', /piece-length must be a power of two/],
    ['torrent:?piece-length=32MiB', /piece-length must be a power of two/],
    ['torrent:?piece-order=random', /piece-order must be sequential or rarest/],
    ['torrent:?tracker=not-a-url', /tracker is not a URL/],
    ['torrent:?tracker=ftp://t.example/', /tracker must be a http\/https\/udp\/ws\/wss URL/],
    ['torrent:?web-seed=udp://x.example/', /web-seed must be a http\/https URL/],
    ['torrent:?metadata-timeout=soon', /metadata-timeout must be a duration/],
    ['torrent:?stall-timeout=0', /stall-timeout must be longer than zero/],
    ['torrent://relative/dir', /must be an absolute path/],
    ['torrent:#x', /fragment/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => {
      assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message))
    })
  }
})

describe('torrent backend: the torrent format', () => {
  it('bencode round-trips and sorts keys', () => {
    const value = { z: 1, a: [Buffer.from('xy'), -3], m: { k: Buffer.alloc(0) } }
    const bytes = bencode(value)
    assert.equal(Buffer.from(bytes).toString('latin1'), 'd1:al2:xyi-3ee1:md1:k0:e1:zi1ee')
    assert.deepEqual(bdecode(bytes).value, { a: [Buffer.from('xy'), -3], m: { k: Buffer.alloc(0) }, z: 1 })
    for (const bad of ['i01e', 'd1:a', '3:ab', 'l', 'i1ex']) assert.throws(() => bdecode(Buffer.from(bad)), FormatError, bad)
  })

  it('the info dictionary is WebTorrent\'s torrent creator\'s with the same parameters, minus its private: 0', async () => {
    const bytes = randomBytes(3 * (1 << 20) + 12345)
    const name = `${NixHash.of('sha256', bytes).toNix32()}.nar`
    const hasher = new PieceHasher(1 << 20)
    for (let i = 0; i < bytes.length; i += 77777) hasher.update(bytes.subarray(i, i + 77777))
    const info = { name, length: bytes.length, pieceLength: 1 << 20, pieces: hasher.finish() }
    const mod = 'create-torrent'
    const createTorrent = (await import(mod) as { default: (input: Buffer, opts: object, cb: (err: Error | null, t: Buffer) => void) => void }).default
    const theirs = await new Promise<Buffer>((resolve, reject) => createTorrent(Object.assign(bytes, { name }), { name, pieceLength: 1 << 20, private: false, announceList: [] }, (err, t) => err === null ? resolve(t) : reject(err)))
    const { info: theirInfo } = bdecode(theirs).value as { info: Record<string, BValue> }
    assert.equal(theirInfo.private, 0)
    delete theirInfo.private
    assert.equal(infoHashOf(info), createHash('sha1').update(bencode(theirInfo)).digest('hex'))
    const ours = parseTorrentFile(torrentFile(info, ['http://t.example/announce'], ['http://ws.example/x.nar']))
    assert.equal(ours.infoHash, infoHashOf(info))
    assert.deepEqual([ours.trackers, ours.webSeeds], [['http://t.example/announce'], ['http://ws.example/x.nar']])
  })

  it('magnet links: hex and base32 info hashes, other kinds are not ours, garbage is an error', () => {
    const m = parseMagnet('magnet:?xt=urn:btih:C12FE1C06BBA254A9DC9F519B335AA7C1367A88A&dn=x.nar&xl=42&tr=http%3A%2F%2Ft%2Fa&ws=http%3A%2F%2Fw%2Fx.nar')
    assert.deepEqual(m, { infoHash: 'c12fe1c06bba254a9dc9f519b335aa7c1367a88a', name: 'x.nar', length: 42, trackers: ['http://t/a'], webSeeds: ['http://w/x.nar'] })
    assert.equal(parseMagnet('magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK')?.infoHash, 'c12fe1c06bba254a9dc9f519b335aa7c1367a88a')
    assert.equal(parseMagnet('magnet:?xt=urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C'), undefined)
    assert.throws(() => parseMagnet('magnet:?xt=urn:btih:1234'), FormatError)
    assert.throws(() => parseMagnet('magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&xl=-1'), FormatError)
  })
})

describe('torrent backend: local discovery messages (BEP 14)', () => {
  const h1 = 'a'.repeat(40)
  const h2 = '0123456789abcdef0123456789abcdef01234567'
  it('several info hashes in one message round-trip', () => {
    const text = formatAnnounce({ host: '239.192.152.143:6771', port: 6881, infoHashes: [h1, h2], cookie: 'narswarm-x' })
    assert.deepEqual(parseAnnounce(text), { host: '239.192.152.143:6771', port: 6881, infoHashes: [h1, h2], cookie: 'narswarm-x' })
  })
  it("reads WebTorrent's announcements (bittorrent-lsd) and ignores what is not one", () => {
    const webtorrent = `BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 51413\r\nInfohash: ${h2.toUpperCase()}\r\ncookie: bittorrent-lsd-2d57\r\n\r\n\r\n`
    assert.deepEqual(parseAnnounce(webtorrent)?.infoHashes, [h2])
    assert.equal(parseAnnounce(webtorrent)?.port, 51413)
    for (const bad of ['', 'GET / HTTP/1.1\r\n\r\n', `BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: ${h1}\r\n\r\n`,
      `BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\nInfohash: xyz\r\n\r\n`, `BT-SEARCH * HTTP/1.1\r\nInfohash: ${h1}\r\n\r\n`]) {
      assert.equal(parseAnnounce(bad), undefined, JSON.stringify(bad))
    }
  })
})

describe('torrent backend: between peers on 127.0.0.1', { skip }, () => {
  let a: TorrentBackend
  before(async () => { a = await open(offline()) })
  after(async () => { await a?.close() })

  it('a NAR published by one node is fetched by another from the swarm, which then seeds it', async () => {
    const bytes = randomBytes(5 * (1 << 20) + 999)
    const locator = await a.publish(upload(bytes))
    assert.match(locator.url, /^magnet:\?xt=urn:btih:[0-9a-f]{40}&dn=[0-9a-z]{52}\.nar&xl=\d+&tr=/)
    assert.deepEqual([locator.compression, locator.fileSize], ['none', bytes.length])
    const b = await open(offline())
    try {
      const got = await drain(await b.open(locator))
      assert.equal(sha(got), sha(bytes))
      assert.equal(b.seeding, 1, 'the fetched NAR is seeded')
      // A third node, with the publisher gone, gets it from the second.
      await a.close()
      const c = await open(offline())
      try {
        assert.equal(sha(await drain(await c.open(locator))), sha(bytes))
      } finally { await c.close() }
    } finally {
      await b.close()
      a = await open(offline())
    }
  })

  it('with reseed=false a fetched NAR is not kept', async () => {
    const bytes = randomBytes(300_000)
    const locator = await a.publish(upload(bytes))
    const dir = join(root, 'no-reseed')
    const b = await open(offline('&reseed=false'), dir)
    try {
      assert.equal(sha(await drain(await b.open(locator))), sha(bytes))
      assert.equal(b.seeding, 0)
      assert.deepEqual(await readdir(join(dir, 'torrent', 'data')), [])
    } finally { await b.close() }
  })

  it('stopping a swarm download mid-stream removes the torrent and its partial data', async () => {
    const bytes = randomBytes(24 * (1 << 20))
    const locator = await a.publish(upload(bytes))
    const dir = join(root, 'aborted')
    const b = await open(offline(), dir)
    try {
      const controller = new AbortController()
      const source = await b.open(locator, { signal: controller.signal })
      let read = 0
      await assert.rejects((async () => {
        for await (const chunk of source!.body) {
          read += chunk.length
          controller.abort(new Error('enough'))
        }
      })(), /enough/)
      assert.ok(read > 0 && read < bytes.length)
      assert.equal(b.seeding, 0)
      assert.deepEqual(await readdir(join(dir, 'torrent', 'data')), [])
      // The next reader starts afresh and gets all of it.
      assert.equal(sha(await drain(await b.open(locator))), sha(bytes))
    } finally { await b.close() }
  })

  it('two readers share one download; the one that stops last does not undo the other\'s complete read', async () => {
    const bytes = randomBytes(6 * (1 << 20))
    const locator = await a.publish(upload(bytes))
    const b = await open(offline())
    try {
      const quitter = (await b.open(locator))!.body[Symbol.asyncIterator]()
      assert.ok((await quitter.next()).value.length > 0)
      assert.equal(sha(await drain(await b.open(locator))), sha(bytes))
      // The quitter stops reading only after the other reader got the whole NAR.
      await quitter.return!()
      assert.equal(b.seeding, 1)
    } finally { await b.close() }
  })

  it('an info hash nobody offers fails as a timeout, never as absence', async () => {
    const b = await open(offline('&metadata-timeout=500ms'))
    try {
      const source = await b.open({ url: `magnet:?xt=urn:btih:${randomBytes(20).toString('hex')}&xl=10`, compression: 'none' })
      await assert.rejects(drain(source), (err: unknown) => err instanceof UpstreamError && err.timeout)
    } finally { await b.close() }
  })

  it('with no peer online the web seed alone delivers it, and the result is seeded under the same info hash', async () => {
    const bytes = randomBytes(2 * (1 << 20) + 5)
    const narHash = NixHash.of('sha256', bytes)
    // An uncompressed binary cache: the NAR's file name is its NarHash.
    const cacheDir = join(root, 'web-seed-cache')
    await mkdir(join(cacheDir, 'nar'), { recursive: true })
    await writeFile(join(cacheDir, 'nar', `${narHash.toNix32()}.nar`), bytes)
    const cache = await startCacheServer(cacheDir)
    const lonely = await open(offline(`&web-seed=${cache.url}/`))
    const locator = await lonely.publish(upload(bytes))
    await lonely.close()
    assert.ok(parseMagnet(locator.url)!.webSeeds[0] === `${cache.url}/nar/${narHash.toNix32()}.nar`)
    const b = await open(offline('&metadata-timeout=300ms'))
    try {
      assert.equal(sha(await drain(await b.open(locator))), sha(bytes))
      assert.ok(cache.requests.includes(`GET /nar/${narHash.toNix32()}.nar`))
      assert.equal(b.seeding, 1, 'the pieces gave the magnet\'s info hash')
      // A peer that fetches next gets it from b, with the web seed gone.
      await cache.close()
      const c = await open(offline())
      try { assert.equal(sha(await drain(await c.open(locator))), sha(bytes)) } finally { await c.close() }
    } finally {
      await b.close()
      await cache.close()
    }
  })

  it('once a peer sent the metadata, the web seed is one more source inside the torrent (BEP 19)', async () => {
    const bytes = randomBytes(6 * (1 << 20))
    const narHash = NixHash.of('sha256', bytes)
    const webDir = join(root, 'in-torrent-web-seed')
    await mkdir(join(webDir, 'nar'), { recursive: true })
    await writeFile(join(webDir, 'nar', `${narHash.toNix32()}.nar`), bytes)
    const web = await startRangeServer(webDir)
    // The only peer uploads at 256 KiB/s: most pieces must come from the web seed.
    const slow = await open(offline(`&upload-limit=256KiB&web-seed=${web.url}/`))
    const b = await open(offline())
    try {
      const locator = await slow.publish(upload(bytes))
      assert.equal(sha(await drain(await b.open(locator))), sha(bytes))
      const ranged = web.requests.filter(r => r.path === `/nar/${narHash.toNix32()}.nar` && r.range !== undefined)
      assert.ok(ranged.length > 0, 'the web seed got range requests from the swarm client')
    } finally {
      await b.close()
      await slow.close()
      await web.close()
    }
  })

  it('bytes that are not what the torrent names are refused before publishing', async () => {
    const bytes = randomBytes(1000)
    await assert.rejects(a.publish({ narHash: NixHash.of('sha256', 'other'), narSize: 1000, body: chunks(bytes) }), IntegrityError)
  })

  it('what a node published is seeded whatever the cap, also after a restart; the cap is for what it fetched', async () => {
    const dir = join(root, 'restart')
    const publisher = await open(offline('&max-seeds=1'), dir)
    const blobs = [randomBytes(200_000), randomBytes(200_000), randomBytes(200_000)]
    const locators = []
    try {
      for (const b of blobs) locators.push(await publisher.publish(upload(b)))
      assert.equal(publisher.seeding, 3, 'every published NAR is seeded: an index names each')
      for (const l of locators) assert.equal(await publisher.has(l), true)
    } finally { await publisher.close() }
    const again = await open(offline('&max-seeds=1'), dir)
    try {
      assert.equal(again.seeding, 3)
      assert.equal((await readdir(join(dir, 'torrent', 'torrents'))).length, 3)
      // Fetching beyond the cap evicts what it fetched, never what it published.
      for (const b of [randomBytes(200_000), randomBytes(200_000)]) assert.equal(sha(await drain(await again.open(await a.publish(upload(b))))), sha(b))
      assert.equal(again.seeding, 4, 'the three published and the last fetched')
      for (const l of locators) assert.equal(await again.has(l), true)
    } finally { await again.close() }

    // A node that fetched three NARs keeps the two most recently used (cap 2), and one after a
    // restart with cap 1: the last.
    const fetcherDir = join(root, 'restart-fetcher')
    const fetcher = await open(offline('&max-seeds=2'), fetcherDir)
    const fetched = [randomBytes(200_000), randomBytes(200_000), randomBytes(200_000)]
    const fetchedLocators = []
    try {
      for (const b of fetched) {
        const l = await a.publish(upload(b))
        fetchedLocators.push(l)
        assert.equal(sha(await drain(await fetcher.open(l))), sha(b))
      }
      assert.equal(fetcher.seeding, 2)
      assert.equal(await fetcher.has(fetchedLocators[2]!), false, 'fetched, not published')
    } finally { await fetcher.close() }
    const fetcherAgain = await open(offline('&max-seeds=1'), fetcherDir)
    try {
      assert.equal(fetcherAgain.seeding, 1)
      const infoHash = parseMagnet(fetchedLocators[2]!.url)!.infoHash
      assert.deepEqual(await readdir(join(fetcherDir, 'torrent', 'torrents')), [`${infoHash}.torrent`])
    } finally { await fetcherAgain.close() }
  })
})
