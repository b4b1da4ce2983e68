/**
 * What makes a narinfo unusable, wherever it comes from (an upstream, an index, a row stored by an
 * earlier run), and what narswarm answers then: a content-address claim that contradicts the
 * NarHash, a signature by no trusted key in an index, an oversized or malformed narinfo (absent,
 * and not remembered as absent), and a compressed NAR whose decompressed bytes are wrong although
 * the compression itself is intact. Real narswarm processes over HTTP; the Nix client is exercised
 * for the CA case in test/e2e/ca-poisoning.test.ts.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { compress } from '../../src/nix/compression.ts'
import { makeSourcePath } from '../../src/nix/store-path.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { openDatabase, stateDatabase } from '../../src/util/sqlite.ts'
import { NarInfoCache } from '../../src/state/narinfo-cache.ts'
import { SqliteMapper } from '../../src/mapper/sqlite.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type LogLine } from '../helpers/narswarm.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'

const key = generateSecretKey('checks-1')
const stranger = generateSecretKey('stranger-1')

/** A NAR-hashed CA path (as `nix-store --add` makes) and the narinfo its cache serves. */
function caPath (name: string): { nar: Buffer, narInfo: NarInfo, hashPart: string } {
  const nar = randomBytes(2000)
  const narHash = NixHash.of('sha256', nar)
  const storePath = makeSourcePath(name, narHash)
  const narInfo = NarInfo.build({
    storePath, url: `nar/${narHash.toNix32()}.nar`, compression: 'none', narHash, narSize: nar.length, ca: `fixed:r:${narHash.toString()}`
  })
  return { nar, narInfo, hashPart: narInfo.hashPart }
}

/** The same claim with another NAR's hash and size: the CA still reproduces the path, so it passes without a signature. */
function poisoned (original: NarInfo, other: Buffer): NarInfo {
  const narHash = NixHash.of('sha256', other)
  return NarInfo.build({ storePath: original.storePath, url: `nar/${narHash.toNix32()}.nar`, compression: 'none', narHash, narSize: other.length, ca: original.ca })
}

async function writeCache (dir: string, entries: Array<{ narInfo: NarInfo, nar: Buffer }>): Promise<void> {
  await mkdir(join(dir, 'nar'), { recursive: true })
  await writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n')
  for (const { narInfo, nar } of entries) {
    await writeFile(join(dir, narInfo.url), nar)
    await writeFile(join(dir, `${narInfo.hashPart}.narinfo`), narInfo.toString())
  }
}

const signed = (n: NarInfo, k = key): NarInfo => signNarInfo(n, k.secret)
const narHashLine = (text: string): string => /^NarHash: (.*)$/m.exec(text)![1]!
const says = (msg: string, part: string) => (l: LogLine) => l.msg.startsWith(msg) && String(l.reason ?? l.problems ?? '').includes(part)

describe('narinfo checks', () => {
  let good: CacheServer
  let hostile: CacheServer
  const ca = caPath('ca-source')
  const other = randomBytes(3000)
  const bad = poisoned(ca.narInfo, other)

  before(async () => {
    const dir = tempDir()
    await writeCache(join(dir, 'good'), [{ narInfo: signed(ca.narInfo), nar: ca.nar }])
    await writeCache(join(dir, 'hostile'), [{ narInfo: bad, nar: other }])
    good = await startCacheServer(join(dir, 'good'))
    hostile = await startCacheServer(join(dir, 'hostile'))
  })
  after(async () => { await Promise.all([good.close(), hostile.close()]) })

  const up = (s: CacheServer, priority: number) => `${s.url}?priority=${priority}&trusted-public-keys=${key.public}`

  test('a CA claim that contradicts the NarHash is refused from an upstream; the good upstream supplies the path', async () => {
    const n = await startNarswarm(['--upstream', up(hostile, 10), '--upstream', up(good, 20)])
    try {
      const res = await fetch(`${n.url}/${ca.hashPart}.narinfo`)
      assert.equal(res.status, 200)
      assert.equal(narHashLine(await res.text()), ca.narInfo.narHash.toString(), 'the good narinfo, although the hostile upstream has the better priority')
      await n.waitForLog(says('narinfo rejected, treated as absent from this upstream', 'requires NarHash'))
      const nar = await fetch(`${n.url}/nar/${ca.narInfo.narHash.toNix32()}.nar`)
      assert.ok(Buffer.from(await nar.arrayBuffer()).equals(ca.nar))
      assert.equal((await fetch(`${n.url}/nar/${bad.narHash.toNix32()}.nar`)).status, 404, 'the hostile NarHash was never cached')
    } finally {
      await n.stop()
    }
  })

  test('a poisoned row stored by an earlier run is dropped when read, and the path fetched again', async () => {
    const stateDir = tempDir()
    const db = openDatabase(stateDatabase(stateDir))
    new NarInfoCache(db, { positiveTtl: 86_400_000, negativeTtl: 60_000 }).putPresent(ca.hashPart, bad.narHash.toNix32(), bad.toString(), hostile.url)
    db.close()
    const n = await startNarswarm(['--upstream', up(good, 20), '--state-dir', stateDir])
    try {
      assert.equal((await fetch(`${n.url}/nar/${bad.narHash.toNix32()}.nar`)).status, 404, 'its NAR URL leads nowhere')
      await n.waitForLog(says('cached narinfo rejected and dropped', 'requires NarHash'))
      const res = await fetch(`${n.url}/${ca.hashPart}.narinfo`)
      assert.equal(res.status, 200)
      assert.equal(narHashLine(await res.text()), ca.narInfo.narHash.toString())
    } finally {
      await n.stop()
    }
  })

  test('an index narinfo is used only when a trusted key signed it (and its CA agrees)', async () => {
    const trusted = makeEntry('indexed-trusted')
    const untrusted = makeEntry('indexed-untrusted')
    const file = join(tempDir(), 'index.sqlite')
    const mapper = new SqliteMapper('test', openDatabase(file))
    const record = async (narInfo: NarInfo) => {
      await mapper.record(narInfo.narHash, { url: 'https://nowhere.invalid/x.nar', compression: 'none' }, { narInfo: narInfo.toString() })
    }
    const build = (e: typeof trusted) => NarInfo.build({ storePath: e.storePath, url: 'nar/x.nar', compression: 'none', narHash: e.narHash, narSize: e.nar.length })
    await record(signed(build(trusted)))
    await record(signed(build(untrusted), stranger))
    await record(bad)
    await mapper.close()
    // The upstream has none of them: whatever narswarm answers 200 for came from the index.
    const n = await startNarswarm(['--upstream', up(good, 20), '--mapper', `sqlite://${file}`, '--trusted-public-keys', key.public])
    try {
      assert.equal((await fetch(`${n.url}/${trusted.hashPart}.narinfo`)).status, 200, 'signed by a trusted key: used')
      await n.waitForLog(l => l.msg === 'narinfo from the index')
      assert.equal((await fetch(`${n.url}/${untrusted.hashPart}.narinfo`)).status, 404, 'signed by a stranger: not used')
      await n.waitForLog(l => l.msg === 'index narinfo rejected: not signed by a trusted key' && l.hashPart === untrusted.hashPart)
      const res = await fetch(`${n.url}/${ca.hashPart}.narinfo`)
      assert.equal(narHashLine(await res.text()), ca.narInfo.narHash.toString(), 'the poisoned index entry lost to the upstream')
      await n.waitForLog(says('index narinfo rejected', 'requires NarHash'))
    } finally {
      await n.stop()
    }
  })

  test('an unusable narinfo (malformed, or over 1 MiB) is a 404 that is not remembered', async () => {
    const cases = [{ entry: makeEntry('malformed'), reason: 'malformed' }, { entry: makeEntry('oversized'), reason: 'larger than' }]
    const dir = tempDir()
    await writeSignedCache(dir, cases.map(c => c.entry), key)
    const server = await startCacheServer(dir)
    const n = await startNarswarm(['--upstream', `${server.url}?trusted-public-keys=${key.public}`])
    try {
      for (const { entry, reason } of cases) {
        const path = `/${entry.hashPart}.narinfo`
        const text = await readFile(join(dir, path), 'utf8')
        const body = reason === 'malformed' ? text.replace('\n', '\n\n') : `${text}X-Padding: ${'x'.repeat(1 << 20)}\n`
        const fault = { match: (p: string) => p === path, fault: { kind: 'body' as const, body } }
        server.faults.push(fault)
        const refused = await fetch(`${n.url}${path}`)
        assert.equal(refused.status, 404, reason)
        assert.equal(refused.headers.get('cache-control'), 'no-store')
        await n.waitForLog(says('narinfo rejected, treated as absent from this upstream', reason))
        server.faults.splice(server.faults.indexOf(fault), 1)
        assert.equal((await fetch(`${n.url}${path}`)).status, 200, `after a ${reason} narinfo, the next request asks again`)
      }
    } finally {
      await n.stop()
      await server.close()
    }
  })

  test('a NAR altered before compression: xz checks out, the NarHash does not', async () => {
    const entry = makeEntry('altered')
    const dir = tempDir()
    await writeSignedCache(dir, [entry], key, 'xz')
    const narInfo = NarInfo.parse(await readFile(join(dir, `${entry.hashPart}.narinfo`), 'utf8'))
    const altered = Buffer.from(entry.nar)
    altered[altered.length >> 1]! ^= 0x01
    const parts: Uint8Array[] = []
    for await (const c of compress('xz', (async function * () { yield altered })())) parts.push(c)
    await writeFile(join(dir, narInfo.url), Buffer.concat(parts))
    const server = await startCacheServer(dir)
    const n = await startNarswarm(['--upstream', `${server.url}?trusted-public-keys=${key.public}`])
    try {
      assert.equal((await fetch(`${n.url}/${entry.hashPart}.narinfo`)).status, 200)
      await assert.rejects(async () => { await (await fetch(`${n.url}/nar/${entry.narHash.toNix32()}.nar`)).arrayBuffer() })
      const line = await n.waitForLog(l => l.msg.startsWith('NAR failed verification'))
      assert.match(String(line.err), /hash mismatch/)
    } finally {
      await n.stop()
      await server.close()
    }
  })
})
