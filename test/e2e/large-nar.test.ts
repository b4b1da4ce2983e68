/**
 * A large NAR flows through narswarm with bounded memory. The upstream generates the bytes on the
 * fly (a random 1 MiB block repeated), so nothing of that size is ever held in memory or on disk;
 * narswarm relays and verifies it; the test hashes what arrives and reads narswarm's peak RSS
 * (VmHWM). Size: TEST_LARGE_NAR_MIB, default 1024 (4096 proves the 4 GB case).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

const MIB = 1 << 20
const sizeMib = Number(process.env.TEST_LARGE_NAR_MIB ?? 1024)
const RSS_CEILING_MIB = 250

test(`a ${sizeMib} MiB NAR is relayed and verified with peak RSS under ${RSS_CEILING_MIB} MiB`, async (t) => {
  const block = randomBytes(MIB)
  const narSize = sizeMib * MIB
  const hash = createHash('sha256')
  for (let i = 0; i < sizeMib; i++) hash.update(block)
  const narHash = new NixHash('sha256', hash.digest())
  const key = generateSecretKey('large-1')
  const storePath = makeStorePath('output:out', NixHash.of('sha256', block), 'large')
  const unsigned = NarInfo.build({ storePath, url: 'nar/large.nar', compression: 'none', narHash, narSize, references: [] })
  const narinfo = signNarInfo(unsigned, key.secret).toString()

  const upstream = createServer((req, res) => {
    if (req.url === `/${storePath.slice(11, 43)}.narinfo`) { res.end(narinfo); return }
    if (req.url !== '/nar/large.nar') { res.writeHead(404).end(); return }
    res.writeHead(200, { 'content-length': narSize })
    let sent = 0
    const pump = (): void => {
      while (sent < sizeMib) {
        sent++
        if (!res.write(block)) { res.once('drain', pump); return }
      }
      res.end()
    }
    pump()
  })
  upstream.listen(0, '127.0.0.1')
  await once(upstream, 'listening')
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
  const narswarm = await startNarswarm(['--upstream', `${upstreamUrl}?trusted-public-keys=${key.public}`, '--log-level', 'info'])
  try {
    const info = await request(`${narswarm.url}/${storePath.slice(11, 43)}.narinfo`)
    assert.equal(info.statusCode, 200)
    const url = /^URL: (.*)$/m.exec(await info.body.text())![1]!
    const res = await request(`${narswarm.url}/${url}`)
    assert.equal(res.statusCode, 200)
    const got = createHash('sha256')
    let bytes = 0
    for await (const chunk of res.body) { got.update(chunk); bytes += chunk.length }
    assert.equal(bytes, narSize)
    assert.ok(new NixHash('sha256', got.digest()).equals(narHash))
    const status = await readFile(`/proc/${narswarm.child.pid}/status`, 'utf8').catch(() => '')
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status)
    if (hwm === null) {
      t.skip('no /proc here: the bytes were checked, but peak RSS could not be measured')
    } else {
      const peakMib = Number(hwm[1]) / 1024
      console.log(`# narswarm peak RSS while relaying ${sizeMib} MiB: ${peakMib.toFixed(0)} MiB`)
      assert.ok(peakMib < RSS_CEILING_MIB, `peak RSS ${peakMib.toFixed(0)} MiB`)
    }
  } finally {
    await narswarm.stop()
    upstream.close()
  }
})
