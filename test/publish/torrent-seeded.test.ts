/**
 * `narswarm publish` into the torrent backend records a magnet link only for what the node seeds:
 * with a seeding cap smaller than the number of paths, every published NAR is still seeded (the
 * cap is for fetched NARs), and after torrents were lost (their files deleted) a second `publish`
 * seeds them again instead of skipping them as already published. The real command, run twice on
 * one state directory; loopback only (no DHT, local discovery or peer exchange).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { runNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import { parseMagnet } from '../../src/backend/torrent/magnet.ts'

test('publish seeds every magnet link it records, whatever max-seeds, and a second publish repairs what was lost', { timeout: 60_000 }, async () => {
  const dir = tempDir('narswarm-torrent-seeded-')
  const entries = Array.from({ length: 5 }, (_, i) => makeEntry(`seeded-${i}`))
  const { publicKey } = await writeSignedCache(join(dir, 'cache'), entries)
  const state = join(dir, 'state')
  const publish = async (): Promise<string> => {
    const r = await runNarswarm(['publish', '--from-cache', `file://${dir}/cache?trusted-public-keys=${publicKey}`,
      '--backend', 'torrent:?dht=false&lsd=false&pex=false&port=0&max-seeds=2', '--state-dir', state, '--log-level', 'warn'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    return r.stdout
  }
  const infoHashes = async (): Promise<string[]> => {
    const index = await openMapper('sqlite:', { log: silentLogger(), stateDir: state })
    try {
      const locators = await Promise.all(entries.map(async e => await index.lookup(e.narHash)))
      return locators.map(ls => {
        assert.equal(ls.length, 1)
        return parseMagnet(ls[0]!.url)!.infoHash
      })
    } finally { await index.close?.() }
  }
  const seeded = async (): Promise<string[]> => (await readdir(join(state, 'torrent', 'torrents'))).map(f => f.replace(/\.torrent$/, '')).sort()

  assert.match(await publish(), /^published 5, skipped 0/)
  const recorded = await infoHashes()
  assert.deepEqual(await seeded(), [...recorded].sort(), 'every recorded magnet link is seeded, although max-seeds=2')

  // Two torrents are lost (their files deleted): a second publish seeds them again.
  for (const h of recorded.slice(0, 2)) {
    await rm(join(state, 'torrent', 'torrents', `${h}.torrent`))
    await rm(join(state, 'torrent', 'data', h), { recursive: true })
  }
  assert.match(await publish(), /^published 2, skipped 3/)
  assert.deepEqual(await infoHashes(), recorded, 'the same magnet links')
  assert.deepEqual(await seeded(), [...recorded].sort())
  assert.match(await publish(), /^published 0, skipped 5/)
})
