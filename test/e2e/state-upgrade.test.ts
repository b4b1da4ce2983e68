/**
 * State directories written by earlier narswarm versions, read by this one: a user who upgrades
 * keeps what the old version stored. Each fixture in test/fixtures/state/ is a state directory that
 * the version at the commit in its name wrote while it relayed three signed NARs (incompressible,
 * compressible, five bytes) from an xz cache, then stopped cleanly; `nars.json` names them. With
 * its upstream unreachable, this version must serve every one from the old chunk store, as `.nar`
 * and as `.nar.zst`, and find the store sound (`narswarm cache verify`).
 *
 * - narswarm-249489d: the first version with a chunk store (no stored hashes of compressed chunks).
 * - narswarm-37c3996: the last version before chunks were sent to peers as stored.
 * - narswarm-913fbb0: the last version before chunks went into packs (a file per chunk).
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import { decompress } from '../../src/nix/compression.ts'
import { collect } from '../helpers/bytes.ts'
import { runNarswarm, startNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'

const FIXTURES = fileURLToPath(new URL('../fixtures/state/', import.meta.url))

interface Fixture { publicKey: string, nars: Array<{ storePath: string, narHash: string, narSize: number }> }

describe('state directories of earlier versions', () => {
  for (const file of readdirSync(FIXTURES).filter(f => f.endsWith('.tar.gz')).sort()) {
    test(`${file}: every NAR served from the old store with the upstream unreachable; cache verify clean`, async () => {
      const dir = tempDir('narswarm-upgrade-')
      execFileSync('tar', ['-xzf', join(FIXTURES, file), '-C', dir])
      const stateDir = join(dir, 'state')
      const fixture = JSON.parse(readFileSync(join(dir, 'nars.json'), 'utf8')) as Fixture
      assert.ok(fixture.nars.length >= 3)
      const narswarm = await startNarswarm(['--state-dir', stateDir, '--upstream', `http://127.0.0.1:1?trusted-public-keys=${fixture.publicKey}`])
      try {
        for (const nar of fixture.nars) {
          const narHash = NixHash.parse(nar.narHash)
          const hashPart = nar.storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)
          for (const [extension, compression] of [['.nar', 'none'], ['.nar.zst', 'zstd']] as const) {
            const response = await fetch(`${narswarm.url}/nar/${narHash.toNix32()}${extension}?hash=${hashPart}`, { headers: { 'user-agent': 'curl/8.0 Nix/2.28.0' } })
            assert.equal(response.status, 200, `${nar.storePath} as ${extension}`)
            const bytes = Buffer.from(await collect(decompress(compression, (async function * () { yield new Uint8Array(await response.arrayBuffer()) })())))
            assert.equal(bytes.length, nar.narSize, `${nar.storePath} as ${extension}`)
            assert.equal(createHash('sha256').update(bytes).digest('hex'), Buffer.from(narHash.digest).toString('hex'), `${nar.storePath} as ${extension}`)
          }
        }
        const served = narswarm.logs.filter(l => l.msg === 'NAR served')
        assert.ok(served.length > 0 && served.every(l => l.source === 'store'), served.map(l => String(l.source)).join(', '))
      } finally {
        await narswarm.stop()
      }
      const verify = await runNarswarm(['cache', 'verify', '--state-dir', stateDir])
      assert.equal(verify.code, 0, verify.stderr)
      assert.match(verify.stdout, / 0 bad, 0 NARs dropped/)
    })
  }
})
