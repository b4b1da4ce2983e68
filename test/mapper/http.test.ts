import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { freePort } from '../helpers/net.ts'
import { tmpdir } from 'node:os'
import { randomBytes } from 'node:crypto'
import { ConfigError, FormatError, UpstreamError } from '../../src/errors.ts'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin } from '../../src/mapper/http.ts'
import { plugin as sqlitePlugin } from '../../src/mapper/sqlite.ts'
import { handleIndexRequest } from '../../src/server/index-api.ts'
import type { Mapper } from '../../src/types.ts'
import { tempDir } from '../helpers/temp.ts'


/** A server answering the index API from `mapper`, and everything else with `fallback`. */
async function serve (mapper: Mapper, fallback: (path: string, res: import('node:http').ServerResponse) => void = (_p, res) => { res.writeHead(418).end() }): Promise<{ server: Server, base: string }> {
  const server = createServer((req, res) => {
    handleIndexRequest(req.url ?? '/', mapper, res).then(handled => { if (!handled) fallback(req.url ?? '/', res) }, () => res.destroy())
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { server, base: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function sqliteMapper (): Promise<Mapper> {
  const dir = tempDir()
  return await sqlitePlugin.create(sqlitePlugin.parse(new URL('sqlite:')), { log: silentLogger(), stateDir: dir })
}

const components = { log: silentLogger(), stateDir: tmpdir() }
const hash = (): NixHash => NixHash.of('sha256', randomBytes(32))

describe('http mapper spec', () => {
  const valid: Array<[string, unknown]> = [
    ['http+https://index.example', { name: 'http+https://index.example', base: 'https://index.example', timeout: 10_000, connections: 8 }],
    ['http+https://index.example/prefix/', { name: 'http+https://index.example/prefix/', base: 'https://index.example/prefix', timeout: 10_000, connections: 8 }],
    ['http+http://127.0.0.1:8080/x?timeout=500ms&connections=2', { name: 'http+http://127.0.0.1:8080/x', base: 'http://127.0.0.1:8080/x', timeout: 500, connections: 2 }],
    ['http+https://user:secret@index.example/', { name: 'http+https://index.example/', base: 'https://user:secret@index.example', timeout: 10_000, connections: 8 }]
  ]
  for (const [spec, init] of valid) it(`accepts ${spec}`, () => assert.deepEqual(plugin.parse(new URL(spec)), init))
  const invalid: Array<[string, RegExp]> = [
    ['http://index.example', /expected http\+http/],
    ['http+ftp://index.example', /expected http\+http/],
    ['http+https://index.example?retries=3', /unknown option 'retries'/],
    ['http+https://index.example?timeout=soon', /'timeout' must be a duration/],
    ['http+https://index.example?timeout=0', /'timeout' must be more than 0/],
    ['http+https://index.example?connections=0', /'connections' must be at least 1/]
  ]
  for (const [spec, message] of invalid) {
    it(`rejects ${spec}`, () => assert.throws(() => plugin.parse(new URL(spec)), (err: unknown) => err instanceof ConfigError && message.test(err.message)))
  }
})

describe('http mapper against a misbehaving index', () => {
  let server: Server
  let base: string
  let backing: Mapper
  const answers = new Map<string, (res: import('node:http').ServerResponse) => void>()
  const requests: string[] = []
  before(async () => {
    backing = await sqliteMapper()
    const s = await serve(backing)
    server = s.server
    base = s.base
    s.server.removeAllListeners('request')
    s.server.on('request', (req, res) => {
      requests.push(req.url ?? '')
      const key = (req.url ?? '').split('/').at(-1) ?? ''
      const answer = answers.get(key)
      if (answer !== undefined) answer(res)
      else void handleIndexRequest(req.url ?? '/', backing, res)
    })
  })
  after(async () => {
    await new Promise(resolve => { server.close(resolve); server.closeAllConnections() })
    await backing.close!()
  })

  async function client (query = ''): Promise<Mapper> {
    return await plugin.create(plugin.parse(new URL(`http+http://${base}/${query}`)), components)
  }

  it('a 5xx is an UpstreamError with its status, not a miss', async () => {
    const key = hash()
    answers.set(key.toNix32(), res => res.writeHead(503).end())
    const m = await client()
    await assert.rejects(m.lookup(key), (err: unknown) => err instanceof UpstreamError && err.status === 503)
    await m.close!()
  })

  it('an index that does not answer in time is an UpstreamError marked as a timeout', async () => {
    const key = hash()
    answers.set(key.toNix32(), () => { /* never answers */ })
    const m = await client('?timeout=200ms')
    await assert.rejects(m.lookup(key), (err: unknown) => err instanceof UpstreamError && err.timeout)
    await m.close!()
  })

  it('a malformed answer is a FormatError', async () => {
    const bad = hash()
    answers.set(bad.toNix32(), res => res.writeHead(200, { 'content-type': 'application/json' }).end('{"locators":[{"url":""}]}'))
    const notJson = hash()
    answers.set(notJson.toNix32(), res => res.writeHead(200).end('<html>'))
    const m = await client()
    await assert.rejects(m.lookup(bad), FormatError)
    await assert.rejects(m.lookup(notJson), FormatError)
    await m.close!()
  })

  it('a refused connection is an UpstreamError', async () => {
    const m = await plugin.create(plugin.parse(new URL(`http+http://127.0.0.1:${await freePort()}`)), components)
    await assert.rejects(m.lookup(hash()), UpstreamError)
    await m.close!()
  })

  it('a key that is not sha256, or a hash part that is not one, resolves to nothing without asking', async () => {
    const m = await client()
    requests.length = 0
    assert.deepEqual(await m.lookup(NixHash.of('sha512', 'x')), [])
    assert.equal(await m.narInfo!('../../etc/passwd'), undefined)
    assert.deepEqual(requests, [], 'no request was made')
    await m.close!()
  })
})

describe('index API server', () => {
  let server: Server
  let base: string
  let backing: Mapper
  before(async () => {
    backing = await sqliteMapper()
    const s = await serve(backing, (_p, res) => { res.writeHead(299).end() })
    server = s.server
    base = `http://${s.base}`
  })
  after(async () => {
    await new Promise(resolve => { server.close(resolve); server.closeAllConnections() })
    await backing.close!()
  })

  it('answers its documented paths and leaves other paths alone', async () => {
    const narHash = hash()
    await backing.record!(narHash, { url: 'ipfs:bafyx', compression: 'none' })
    const found = await fetch(`${base}/narswarm/v1/locators/${narHash.toNix32()}`)
    assert.equal(found.status, 200)
    assert.equal(found.headers.get('content-type'), 'application/json')
    assert.deepEqual(await found.json(), { locators: [{ url: 'ipfs:bafyx', compression: 'none' }] })
    assert.equal((await fetch(`${base}/narswarm/v1/locators/${hash().toNix32()}`)).status, 404)
    assert.equal((await fetch(`${base}/narswarm/v1/locators/not-a-hash`)).status, 404)
    assert.equal((await fetch(`${base}/narswarm/v1/narinfo/${'1'.repeat(32)}`)).status, 404)
    assert.equal((await fetch(`${base}/narswarm/v2/anything`)).status, 404)
    assert.equal((await fetch(`${base}/narswarm/v1/locators/${narHash.toNix32()}`, { method: 'POST' })).status, 405)
    assert.equal((await fetch(`${base}/nix-cache-info`)).status, 299)
  })

  it('a failing mapper is a 502, never a 404', async () => {
    const failing: Mapper = { name: 'failing', lookup: async () => { throw new UpstreamError('x', 'down') } }
    const s = await serve(failing)
    const res = await fetch(`http://${s.base}/narswarm/v1/locators/${hash().toNix32()}`)
    assert.equal(res.status, 502)
    await new Promise(resolve => { s.server.close(resolve); s.server.closeAllConnections() })
  })
})
