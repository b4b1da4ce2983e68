import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile, rm, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, parseListen } from '../../src/cli/config.ts'
import { parseUpstreamSpec } from '../../src/upstream/spec.ts'

const KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='
const PLUS_KEY = 'test-cache-1:9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5Vs='

test('embedded defaults: 127.0.0.1:37515, cache.nixos.org with its key, XDG state dir', () => {
  const c = loadConfig({ flags: {}, env: { HOME: '/home/u' } })
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 37515 })
  assert.equal(c.stateDir, '/home/u/.local/share/narswarm')
  assert.equal(c.upstreams.length, 1)
  assert.equal(c.upstreams[0]!.url, 'https://cache.nixos.org')
  assert.deepEqual(c.upstreams[0]!.trustedPublicKeys, [KEY])
  assert.equal(c.upstreams[0]!.requireSigs, true)
  assert.equal(loadConfig({ flags: {}, env: { XDG_DATA_HOME: '/data' } }).stateDir, '/data/narswarm')
})

test('the example configuration file loads, and file < env < flags', async () => {
  const example = new URL('../../narswarm.example.toml', import.meta.url)
  const fromExample = loadConfig({ flags: { config: example.pathname }, env: {} })
  assert.equal(fromExample.upstreams[0]!.url, 'https://cache.nixos.org')
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-conf-'))
  try {
    const file = join(dir, 'c.toml')
    await writeFile(file, `listen = "127.0.0.1:1000"\npriority = 10\nnarinfo-negative-ttl = "5m"\n\n[[upstream]]\nurl = "http://127.0.0.1:9/"\nrequire-sigs = false\npriority = 3\nnarinfo-timeout = "250ms"\n`)
    const c = loadConfig({ flags: { config: file }, env: {} })
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 1000 })
    assert.equal(c.narinfoNegativeTtl, 300_000)
    assert.equal(c.upstreams[0]!.url, 'http://127.0.0.1:9')
    assert.equal(c.upstreams[0]!.narinfoTimeout, 250)
    const env = loadConfig({ flags: { config: file }, env: { NARSWARM_PRIORITY: '20', NARSWARM_LISTEN: '127.0.0.1:2000' } })
    assert.equal(env.priority, 20)
    const flags = loadConfig({ flags: { config: file, listen: '[::1]:3000' }, env: { NARSWARM_LISTEN: '127.0.0.1:2000' } })
    assert.deepEqual(flags.listen, { host: '::1', port: 3000 })
    const viaEnv = loadConfig({ flags: {}, env: { NARSWARM_CONFIG: file, NARSWARM_UPSTREAM: `https://a.example?trusted-public-keys=${KEY} https://b.example?require-sigs=false` } })
    assert.deepEqual(viaEnv.upstreams.map(u => u.url), ['https://a.example', 'https://b.example'])
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('bad configuration is refused with a message that names the problem', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-conf-'))
  const write = async (text: string) => { const f = join(dir, `${Math.random()}.toml`); await writeFile(f, text); return f }
  try {
    const cases: Array<[() => unknown, RegExp]> = [
      [async () => loadConfig({ flags: { config: await write('lisen = "x"\n') }, env: {} }), /unknown key 'lisen'/],
      [async () => loadConfig({ flags: { config: await write('listen = \n') }, env: {} }), /not valid TOML/],
      [async () => loadConfig({ flags: { config: join(dir, 'missing.toml') }, env: {} }), /cannot read config file/],
      [async () => loadConfig({ flags: { config: await write('[[upstream]]\nurl = "https://x"\nrequire-sig = false\n') }, env: {} }), /unknown option 'require-sig'/],
      [async () => loadConfig({ flags: { config: await write('upstream = "https://x"\n') }, env: {} }), /must be an array/],
      [() => loadConfig({ flags: {}, env: { NARSWARM_LISTN: 'x' } }), /unknown environment variable NARSWARM_LISTN/],
      [() => loadConfig({ flags: { listen: 'localhost' }, env: {} }), /listen must be HOST:PORT/],
      [() => loadConfig({ flags: { listen: '127.0.0.1:99999' }, env: {} }), /listen must be HOST:PORT/],
      [() => loadConfig({ flags: { priority: 'high' }, env: {} }), /priority must be an integer/],
      [() => loadConfig({ flags: { 'log-level': 'loud' }, env: {} }), /log-level must be one of/],
      [() => loadConfig({ flags: { 'narinfo-positive-ttl': '3 weeks' }, env: {} }), /narinfo-positive-ttl must be a duration/],
      [() => loadConfig({ flags: { upstream: ['https://a.example', 'https://a.example?require-sigs=false'] }, env: {} }), /require-sigs is on but no trusted-public-keys/],
      [() => loadConfig({ flags: { upstream: [`https://a.example?trusted-public-keys=${KEY}`, `https://a.example?trusted-public-keys=${KEY}`] }, env: {} }), /configured twice/]
    ]
    for (const [fn, message] of cases) {
      await assert.rejects(async () => fn(), (err: Error) => err.name === 'ConfigError' && message.test(err.message), String(message))
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('upstream specs: valid and invalid, with the + of base64 keys kept', () => {
  const u = parseUpstreamSpec(`https://cache.example/sub/?priority=7&trusted-public-keys=${PLUS_KEY}&trusted-public-keys=${KEY}&nar-timeout=2m&connections=4`)
  assert.equal(u.url, 'https://cache.example/sub')
  assert.equal(u.priority, 7)
  assert.deepEqual(u.trustedPublicKeys, [PLUS_KEY, KEY])
  assert.equal(u.narTimeout, 120_000)
  assert.equal(u.connections, 4)
  assert.equal(parseUpstreamSpec(`https://x.example?trusted-public-keys=${encodeURIComponent(PLUS_KEY)}`).trustedPublicKeys[0], PLUS_KEY)
  const invalid: Array<[string, RegExp]> = [
    ['not a url', /is not a URL/],
    ['ftp://x.example?require-sigs=false', /only http:\/\/ and https:\/\//],
    ['https://x.example?trusted-public-keys=broken', /trusted public key 'broken'/],
    ['https://x.example?priority=1.5&require-sigs=false', /priority must be an integer/],
    ['https://x.example?require-sigs=maybe', /require-sigs must be true or false/],
    ['https://x.example?compression=xz&require-sigs=false', /unknown option 'compression'/],
    ['https://x.example?require-sigs=false&stall-timeout=soon', /stall-timeout must be a duration/]
  ]
  for (const [spec, message] of invalid) assert.throws(() => parseUpstreamSpec(spec), { name: 'ConfigError', message }, spec)
})

test('listen addresses', () => {
  assert.deepEqual(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80 })
  assert.deepEqual(parseListen('[::]:8080'), { host: '::', port: 8080 })
  assert.deepEqual(parseListen('9000'), { host: '127.0.0.1', port: 9000 })
})

test('every setting is documented in narswarm.example.toml and the README', async () => {
  const example = await readFile(new URL('../../narswarm.example.toml', import.meta.url), 'utf8')
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
  const { SETTINGS } = await import('../../src/cli/config.ts')
  for (const key of [...Object.keys(SETTINGS), 'upstream', 'trusted-public-keys', 'require-sigs', 'narinfo-timeout', 'nar-timeout', 'stall-timeout', 'connect-timeout', 'connections']) {
    assert.match(example, new RegExp(`^#? ?\\[?\\[?${key}\\]?\\]? ?=?`, 'm'), `${key} in narswarm.example.toml`)
    assert.ok(readme.includes(key), `${key} in README.md`)
  }
})

test('discovery: mdns by default, off on request, anything else refused', () => {
  const c = loadConfig({ flags: {}, env: {} })
  assert.equal(c.discovery, 'mdns')
  assert.equal(c.discoveryInterval, 10_000)
  assert.equal(loadConfig({ flags: {}, env: { NARSWARM_DISCOVERY: 'off' } }).discovery, 'off')
  assert.equal(loadConfig({ flags: { 'discovery-interval': '2s' }, env: {} }).discoveryInterval, 2_000)
  assert.throws(() => loadConfig({ flags: { discovery: 'avahi' }, env: {} }), /discovery must be one of mdns, off, got 'avahi'/)
  assert.throws(() => loadConfig({ flags: { 'discovery-interval': '0' }, env: {} }), /at least 100ms/)
})

test('peer settings: a listener on all interfaces by default, off on request; static peers checked; sizes for the upload limit', () => {
  const c = loadConfig({ flags: {}, env: {} })
  assert.deepEqual(c.peerListen, { host: '0.0.0.0', port: 37516 })
  assert.deepEqual(c.peers, [])
  assert.equal(c.peerUploadLimit, 0)
  assert.equal(c.peerMaxRequests, 64)
  assert.equal(loadConfig({ flags: { 'peer-listen': 'off' }, env: {} }).peerListen, undefined)
  assert.deepEqual(loadConfig({ flags: { peer: ['http://10.0.0.7:37516/'] }, env: {} }).peers, ['http://10.0.0.7:37516'])
  assert.deepEqual(loadConfig({ flags: {}, env: { NARSWARM_PEER: 'http://a.lan:1 http://b.lan:2' } }).peers, ['http://a.lan:1', 'http://b.lan:2'])
  assert.throws(() => loadConfig({ flags: { peer: ['file:///etc'] }, env: {} }), /peer: a peer URL must be http/)
  assert.throws(() => loadConfig({ flags: { 'peer-listen': 'everywhere' }, env: {} }), /peer-listen must be HOST:PORT .* or off/)
  assert.equal(loadConfig({ flags: { 'peer-upload-limit': '10MiB' }, env: {} }).peerUploadLimit, 10 * 1024 * 1024)
})

test('cache-size: 10 GiB by default, sizes with binary units, 0 keeps nothing, nonsense refused', () => {
  assert.equal(loadConfig({ flags: {}, env: {} }).cacheSize, 10 * 1024 ** 3)
  assert.equal(loadConfig({ flags: { 'cache-size': '500MiB' }, env: {} }).cacheSize, 500 * 1024 ** 2)
  assert.equal(loadConfig({ flags: {}, env: { NARSWARM_CACHE_SIZE: '2G' } }).cacheSize, 2 * 1024 ** 3)
  assert.equal(loadConfig({ flags: { 'cache-size': '0' }, env: {} }).cacheSize, 0)
  assert.throws(() => loadConfig({ flags: { 'cache-size': 'lots' }, env: {} }), /cache-size must be a size/)
})

test('server limits and the index API: defaults, values, refusals', () => {
  const c = loadConfig({ flags: {}, env: {} })
  assert.equal(c.indexApi, 'local')
  assert.deepEqual(c.limits, { headersTimeout: 20_000, requestTimeout: 60_000, keepAliveTimeout: 60_000, maxConnections: 1024, maxConnectionsPerClient: 64 })
  const set = loadConfig({ flags: { 'index-api': 'public', 'header-timeout': '2s', 'max-connections-per-client': '3' }, env: { NARSWARM_REQUEST_TIMEOUT: '5s' } })
  assert.equal(set.indexApi, 'public')
  assert.equal(set.limits.headersTimeout, 2000)
  assert.equal(set.limits.requestTimeout, 5000)
  assert.equal(set.limits.maxConnectionsPerClient, 3)
  assert.throws(() => loadConfig({ flags: { 'index-api': 'everyone' }, env: {} }), /index-api must be one of local, public, off/)
  assert.throws(() => loadConfig({ flags: { 'header-timeout': '2m' }, env: {} }), /request-timeout .* must not be shorter than header-timeout/)
  assert.throws(() => loadConfig({ flags: { 'max-connections': '0' }, env: {} }), /max-connections must be positive/)
})

test('netrc-file: upstreams without credentials get those of their host; a file named on purpose must be readable', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-netrc-'))
  try {
    const netrc = join(dir, 'netrc')
    await writeFile(netrc, 'machine private.example login ci password "t@k en"\n')
    const c = loadConfig({
      flags: { 'netrc-file': netrc, upstream: [`https://private.example/c?trusted-public-keys=${KEY}`, `https://own:cred@private.example/d?trusted-public-keys=${KEY}`, `https://cache.nixos.org?trusted-public-keys=${KEY}`] },
      env: {}
    })
    assert.deepEqual(c.upstreams.map(u => u.url), ['https://ci:t%40k%20en@private.example/c', 'https://own:cred@private.example/d', 'https://cache.nixos.org'])
    assert.throws(() => loadConfig({ flags: { 'netrc-file': join(dir, 'absent') }, env: {} }), /netrc-file .*absent: ENOENT/)
    // Nix's default file is read only when there is one this user may read.
    assert.equal(loadConfig({ flags: {}, env: {} }).upstreams[0]!.url, 'https://cache.nixos.org')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
