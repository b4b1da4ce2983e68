/**
 * docs/protocol.md, checked against the implementation: every row of its "Checked examples" table
 * is requested from a running narswarm, and the status must be the documented one. A path the
 * documentation promises and the server does not keep (or the reverse) fails here.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { makeEntry, writeSignedCache, type CacheEntry } from '../helpers/signed-cache.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { freePort } from '../helpers/net.ts'
import { NixHash } from '../../src/nix/hash.ts'

interface Row { given: string, method: string, path: string, headers: Record<string, string>, status: number }

/** The rows of the table under "## Checked examples". */
function documentedRows (): Row[] {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
  const section = doc.slice(doc.indexOf('## Checked examples'))
  const rows: Row[] = []
  for (const line of section.split('\n')) {
    const cells = line.split('|').slice(1, -1).map(c => c.trim())
    if (cells.length !== 4 || !cells[1]!.startsWith('`')) continue
    const [method, path] = cells[1]!.replaceAll('`', '').split(' ') as [string, string]
    const headers: Record<string, string> = {}
    if (cells[2] !== '') {
      const [name, ...value] = cells[2]!.replaceAll('`', '').split(':')
      headers[name!.trim().toLowerCase()] = value.join(':').trim()
    }
    rows.push({ given: cells[0]!, method, path, headers, status: Number(cells[3]) })
  }
  return rows
}

async function statusOf (base: string, method: string, path: string, headers: Record<string, string>): Promise<number> {
  const url = new URL(base)
  return await new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers }, res => {
      res.resume()
      res.once('end', () => resolve(res.statusCode!))
    })
    req.once('error', reject)
    req.end()
  })
}

describe('docs/protocol.md matches what narswarm answers', () => {
  const rows = documentedRows()
  let entry: CacheEntry
  let upstream: CacheServer
  let narswarm: NarswarmProcess
  let down: NarswarmProcess
  let values: Record<string, string>

  before(async () => {
    const dir = tempDir()
    entry = makeEntry('documented')
    const { publicKey } = await writeSignedCache(dir, [entry], undefined, 'xz')
    upstream = await startCacheServer(dir)
    narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${publicKey}`])
    down = await startNarswarm(['--upstream', `http://127.0.0.1:${await freePort()}?trusted-public-keys=${publicKey}`])
    const absent = makeEntry('absent')
    values = {
      hashPart: entry.hashPart,
      HASHPART: entry.hashPart.toUpperCase(),
      narHash: entry.narHash.toNix32(),
      narSize: String(entry.nar.length),
      absent: absent.hashPart,
      unknownNar: NixHash.of('sha256', randomBytes(32)).toNix32()
    }
  })
  after(async () => {
    await narswarm?.stop()
    await down?.stop()
    await upstream?.close()
  })

  test('the table is there and covers every kind of request', () => {
    assert.ok(rows.length >= 20, `found ${rows.length} rows`)
    for (const path of ['/nix-cache-info', '.narinfo', '/nar/', '/narswarm/v1/', '/metrics', '/health']) {
      assert.ok(rows.some(r => r.path.includes(path)), `a row requests ${path}`)
    }
  })

  test('every documented request gets the documented status', async () => {
    const fill = (text: string): string => text.replace(/\{(\w+)\}/g, (_, name: string) => {
      assert.ok(name in values, `unknown placeholder {${name}}`)
      return values[name]!
    })
    const wrong: string[] = []
    for (const row of rows) {
      const base = row.given === 'upstream down' ? down.url : row.given === 'peer listener' ? narswarm.peerUrl : narswarm.url
      assert.ok(['', 'upstream down', 'peer listener'].includes(row.given), `unknown condition '${row.given}'`)
      assert.ok(base !== undefined, 'the peer listener is on')
      const headers = Object.fromEntries(Object.entries(row.headers).map(([k, v]) => [k, fill(v)]))
      const status = await statusOf(base, row.method, fill(row.path), headers)
      if (status !== row.status) wrong.push(`${row.given} ${row.method} ${row.path} ${JSON.stringify(row.headers)}: documented ${row.status}, got ${status}`)
    }
    assert.deepEqual(wrong, [])
  })
})
