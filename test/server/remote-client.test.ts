/**
 * narswarm as another machine sees it: a client in a network namespace of its own, joined to this
 * one by a veth pair, so its address is not loopback. The index API is not served to it by
 * default, is served without `file:` locators with `index-api = "public"`, and one such address
 * gets at most `max-connections-per-client` connections. Skipped with the reason where network
 * namespaces cannot be made (not root, no `ip`).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import { randomBytes, randomInt } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { openDatabase } from '../../src/util/sqlite.ts'
import { SqliteMapper } from '../../src/mapper/sqlite.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { makeEntry } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'
import { freePort } from '../helpers/net.ts'

const run = promisify(execFile)

interface Namespace { name: string, hostAddress: string, exec: (cmd: string, args: string[]) => Promise<string>, remove: () => Promise<void> }

/** A namespace with one veth link to this one; undefined (with the reason) where that is impossible. */
async function makeNamespace (): Promise<Namespace | string> {
  const tag = randomBytes(3).toString('hex')
  const name = `nsw-${tag}`
  const [host, inner] = [`nswh${tag}`, `nswn${tag}`]
  const net = `10.${randomInt(200, 250)}.${randomInt(0, 256)}`
  const remove = async (): Promise<void> => {
    await run('ip', ['netns', 'del', name]).catch(() => {})
    await run('ip', ['link', 'del', host]).catch(() => {})
  }
  try {
    for (const args of [
      ['netns', 'add', name],
      ['link', 'add', host, 'type', 'veth', 'peer', 'name', inner],
      ['link', 'set', inner, 'netns', name],
      ['addr', 'add', `${net}.1/30`, 'dev', host],
      ['link', 'set', host, 'up'],
      ['-n', name, 'addr', 'add', `${net}.2/30`, 'dev', inner],
      ['-n', name, 'link', 'set', inner, 'up'],
      ['-n', name, 'link', 'set', 'lo', 'up']
    ]) await run('ip', args)
  } catch (err) {
    await remove()
    return `cannot make a network namespace here: ${(err as Error).message.split('\n')[0]}`
  }
  const exec = async (cmd: string, args: string[]): Promise<string> => (await run('ip', ['netns', 'exec', name, cmd, ...args])).stdout
  return { name, hostAddress: `${net}.1`, exec, remove }
}

/** What a client in the namespace gets for each of `urls`, in order (one process for all). */
async function remoteGet (ns: Namespace, urls: string[]): Promise<Array<{ status: number, body: string }>> {
  const script = `(async () => {
    const out = []
    for (const url of ${JSON.stringify(urls)}) {
      const r = await fetch(url, { signal: AbortSignal.timeout(10000) })
      out.push({ status: r.status, body: await r.text() })
    }
    console.log(JSON.stringify(out))
  })()`
  return JSON.parse(await ns.exec(process.execPath, ['-e', script])) as Array<{ status: number, body: string }>
}

describe('a client on another machine', async () => {
  const made = process.getuid?.() === 0 ? await makeNamespace() : 'needs root to make a network namespace'
  const ns = typeof made === 'string' ? undefined : made
  const skip = typeof made === 'string' ? made : false
  const key = generateSecretKey('remote-1')
  const published = makeEntry('published')
  const localOnly = makeEntry('local-only')
  let indexFile: string

  before(async () => {
    if (ns === undefined) return
    indexFile = join(tempDir(), 'index.sqlite')
    const mapper = new SqliteMapper('test', openDatabase(indexFile))
    const unsigned = NarInfo.build({ storePath: published.storePath, url: 'nar/x.nar', compression: 'none', narHash: published.narHash, narSize: published.nar.length })
    const narInfo = signNarInfo(unsigned, key.secret).toString()
    await mapper.record(published.narHash, { url: 'file:///srv/secret/published.nar', compression: 'none' })
    await mapper.record(published.narHash, { url: 's3://bucket/published.nar', compression: 'none' }, { narInfo })
    await mapper.record(localOnly.narHash, { url: 'file:///srv/secret/local-only.nar', compression: 'none' })
    await mapper.close()
  })
  after(async () => { await ns?.remove() })

  /** narswarm on every interface, its index the prepared one, no upstream it could reach. */
  async function start (extra: string[]): Promise<{ n: NarswarmProcess, local: string, remote: string }> {
    const dead = `http://127.0.0.1:${await freePort()}?trusted-public-keys=${key.public}`
    const n = await startNarswarm(['--listen', '0.0.0.0:0', '--upstream', dead, '--mapper', `sqlite://${indexFile}`, ...extra])
    const { port } = new URL(n.url)
    return { n, local: `http://127.0.0.1:${port}`, remote: `http://${ns!.hostAddress}:${port}` }
  }
  const locators = (h: NixHash): string => `/narswarm/v1/locators/${h.toNix32()}`
  const narInfoPath = `/narswarm/v1/narinfo/${published.hashPart}`

  test('by default the index API answers loopback clients only', { skip }, async () => {
    const { n, local, remote } = await start([])
    try {
      const own = await fetch(`${local}${locators(published.narHash)}`)
      assert.equal(own.status, 200)
      assert.match(await own.text(), /file:\/\/\/srv\/secret/, 'a local client sees every locator')
      const [info, locs, narInfo] = await remoteGet(ns!, [`${remote}/nix-cache-info`, `${remote}${locators(published.narHash)}`, `${remote}${narInfoPath}`])
      assert.equal(info!.status, 200, 'the remote client reaches narswarm')
      assert.equal(locs!.status, 404)
      assert.equal(narInfo!.status, 404)
    } finally {
      await n.stop()
    }
  })

  test('index-api = public: served to everyone, never a file: locator to another machine', { skip }, async () => {
    const { n, remote } = await start(['--index-api', 'public'])
    try {
      const [got, none, narInfo] = await remoteGet(ns!, [`${remote}${locators(published.narHash)}`, `${remote}${locators(localOnly.narHash)}`, `${remote}${narInfoPath}`])
      assert.equal(got!.status, 200)
      assert.deepEqual(JSON.parse(got!.body), { locators: [{ url: 's3://bucket/published.nar', compression: 'none' }] })
      assert.equal(none!.status, 404, 'nothing left to show')
      assert.equal(narInfo!.status, 200)
    } finally {
      await n.stop()
    }
  })

  test('index-api = off: not even for loopback clients', { skip }, async () => {
    const { n, local } = await start(['--index-api', 'off'])
    try {
      assert.equal((await fetch(`${local}${locators(published.narHash)}`)).status, 404)
    } finally {
      await n.stop()
    }
  })

  test('one remote address gets at most max-connections-per-client connections; loopback clients are not held to it', { skip }, async () => {
    const { n, local, remote } = await start(['--max-connections-per-client', '2'])
    // Runs in the namespace: holds two kept-alive connections, tries a third, then uses the two again.
    const script = `
      const net = require('node:net')
      const url = new URL(${JSON.stringify(remote)})
      const open = () => new Promise(resolve => {
        const s = net.connect(Number(url.port), url.hostname)
        s.on('error', () => {})
        s.once('connect', () => resolve(s))
      })
      const ask = s => new Promise(resolve => {
        let text = ''
        s.on('data', d => { text += d; if (text.includes('Priority:')) resolve(text.slice(9, 12)) })
        s.once('close', () => resolve('closed:' + JSON.stringify(text)))
        s.write('GET /nix-cache-info HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
      })
      ;(async () => {
        const held = [await open(), await open()]
        const first = [await ask(held[0]), await ask(held[1])]
        const third = await ask(await open())
        const again = [await ask(held[0]), await ask(held[1])]
        console.log(JSON.stringify({ first, third, again }))
        process.exit(0)
      })()`
    try {
      const result = JSON.parse(await ns!.exec(process.execPath, ['-e', script])) as { first: string[], third: string, again: string[] }
      assert.deepEqual(result.first, ['200', '200'])
      assert.equal(result.third, 'closed:""', 'the third connection is closed unanswered')
      assert.deepEqual(result.again, ['200', '200'], 'the two held connections still work')
      const here = await Promise.all([1, 2, 3].map(async () => await new Promise<string>(resolve => {
        const s = connect(Number(new URL(local).port), '127.0.0.1')
        let text = ''
        s.on('error', () => {})
        s.on('data', d => { text += String(d); if (text.includes('Priority:')) { s.destroy(); resolve(text.slice(9, 12)) } })
        s.once('close', () => resolve('closed'))
        s.write('GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n')
      })))
      assert.deepEqual(here, ['200', '200', '200'])
      await n.waitForLog(l => l.msg === 'connection refused: too many connections')
    } finally {
      await n.stop()
    }
  })
})
