/**
 * Cache poisoning through a content-address claim, with the real Nix: a hostile upstream (the
 * better priority) serves, for a `nix-store --add` path, a narinfo whose `CA: fixed:r:sha256:X` is
 * true but whose NarHash is another NAR's. The CA alone makes it acceptable unsigned, and the other
 * NAR matches that NarHash, so only the rule "CA fixes NarHash" stops it: Nix would refuse every
 * download ("ca hash mismatch"). narswarm refuses it, says why, caches nothing of it, and Nix gets
 * the path from the good upstream.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { copyTo, hashPartOf, readNarInfo, signingKey } from '../helpers/closure.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { stateDatabase } from '../../src/util/sqlite.ts'

describe('a CA claim that contradicts the NarHash', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let target: string
  let publicKey: string
  let good: CacheServer
  let hostile: CacheServer

  before(async () => {
    nix = await makeNixEnv()
    const add = async (name: string): Promise<string> => {
      const file = join(nix.dir, name)
      await writeFile(file, `${name} ${randomBytes(8).toString('hex')}\n`)
      return (await nix.run('nix-store', ['--add', file])).trim()
    }
    target = await add('target.txt')
    const other = await add('other.txt')
    const key = await signingKey(nix)
    publicKey = key.publicKey
    const [goodDir, hostileDir] = [join(nix.dir, 'good'), join(nix.dir, 'hostile')]
    await copyTo(nix, { top: target, secretKeyFile: key.secretKeyFile }, goodDir, 'none')
    await nix.run('nix', ['copy', '--to', `file://${hostileDir}?compression=none`, other])
    const real = NarInfo.parse(await readNarInfo(goodDir, target))
    assert.match(real.ca ?? '', /^fixed:r:sha256:/)
    const decoy = NarInfo.parse(await readNarInfo(hostileDir, other))
    const forged = NarInfo.build({
      storePath: real.storePath, url: decoy.url, compression: decoy.compression, narHash: decoy.narHash, narSize: decoy.narSize,
      references: real.references, ca: real.ca
    })
    await writeFile(join(hostileDir, `${hashPartOf(target)}.narinfo`), forged.toString())
    good = await startCacheServer(goodDir)
    hostile = await startCacheServer(hostileDir)
  })
  after(async () => {
    await good?.close()
    await hostile?.close()
    await nix?.cleanup()
  })

  test('is refused; nothing of it is cached; Nix substitutes from the good upstream', async () => {
    const narswarm = await startNarswarm([
      '--upstream', `${hostile.url}?priority=10&trusted-public-keys=${publicKey}`,
      '--upstream', `${good.url}?priority=20&trusted-public-keys=${publicKey}`])
    try {
      const store = `local?root=${join(nix.dir, 'store')}`
      const result = await nix.tryRun('nix-store', ['--store', store, '--realise', target,
        '--option', 'substituters', narswarm.url, '--option', 'trusted-public-keys', publicKey])
      assert.equal(result.code, 0, `Nix substitutes the path: ${result.stderr}`)
      assert.equal(await readFile(join(nix.dir, 'store', target.slice(1)), 'utf8'), await readFile(target, 'utf8'))
      const refused = await narswarm.waitForLog(l => l.msg === 'narinfo rejected, treated as absent from this upstream' && l.upstream === hostile.url)
      assert.match(String(refused.reason), /requires NarHash/)
      const db = new DatabaseSync(stateDatabase(narswarm.stateDir), { readOnly: true })
      try {
        const rows = db.prepare('SELECT upstream FROM narinfo WHERE hash_part = ?').all(hashPartOf(target))
        assert.deepEqual(rows.map(r => r.upstream), [good.url])
      } finally {
        db.close()
      }
    } finally {
      await narswarm.stop()
    }
  })
})
