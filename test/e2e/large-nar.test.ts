/**
 * A large NAR flows through narswarm with bounded memory. The upstream generates the bytes on the
 * fly (a random 1 MiB block repeated), so nothing of that size is ever held in memory or on disk;
 * narswarm relays and verifies it; the test hashes what arrives and reads narswarm's peak RSS
 * (VmHWM). Size: TEST_LARGE_NAR_MIB, default 1024 (4096 proves the 4 GB case).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { request } from 'undici'
import { NixHash } from '../../src/nix/hash.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { startStreamedNarServer } from '../helpers/streamed-nar-server.ts'

const MIB = 1 << 20
const sizeMib = Number(process.env.TEST_LARGE_NAR_MIB ?? 1024)
const RSS_CEILING_MIB = 250

test(`a ${sizeMib} MiB NAR is relayed and verified with peak RSS under ${RSS_CEILING_MIB} MiB`, async (t) => {
  const block = randomBytes(MIB)
  const narSize = sizeMib * MIB
  const hash = createHash('sha256')
  for (let i = 0; i < sizeMib; i++) hash.update(block)
  const narHash = new NixHash('sha256', hash.digest())
  const storePath = makeStorePath('output:out', NixHash.of('sha256', block), 'large')
  const upstream = await startStreamedNarServer({
    storePath, narHash, narSize,
    body: async function * () { for (let i = 0; i < sizeMib; i++) yield block }
  })
  const narswarm = await startNarswarm(['--upstream', upstream.upstream, '--log-level', 'info'])
  try {
    const info = await request(`${narswarm.url}/${upstream.hashPart}.narinfo`)
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
