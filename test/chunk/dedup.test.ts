import { test } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, mkdirSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { dumpPath } from '../../src/nix/nar/dump.ts'
import { collect } from '../helpers/bytes.ts'
import { pseudoRandom } from '../helpers/pseudo-random.ts'
import { tempDir } from '../helpers/temp.ts'
import { identity, openStore } from './helpers.ts'

function makeTree (root: string): void {
  mkdirSync(join(root, 'bin'), { recursive: true })
  mkdirSync(join(root, 'share', 'doc'), { recursive: true })
  for (const name of ['tool', 'helper', 'daemon']) writeFileSync(join(root, 'bin', name), pseudoRandom(name, 1_500_000), { mode: 0o755 })
  writeFileSync(join(root, 'share', 'doc', 'README'), Array.from({ length: 20000 }, (_, i) => `line ${i}: some documentation\n`).join(''))
  symlinkSync('../bin/tool', join(root, 'share', 'tool'))
}

test('two versions of a NAR share most chunks: the second stores a small fraction of its bytes', async () => {
  const base = tempDir()
  const v1 = join(base, 'v1')
  makeTree(v1)
  const v2 = join(base, 'v2')
  cpSync(v1, v2, { recursive: true, verbatimSymlinks: true })
  // A new version: one binary patched in place, one grown in the middle, the docs edited, a file added.
  const helper = readFileSync(join(v2, 'bin', 'helper'))
  helper.write('version 2.0.1', 700_000)
  writeFileSync(join(v2, 'bin', 'helper'), helper)
  const daemon = readFileSync(join(v2, 'bin', 'daemon'))
  writeFileSync(join(v2, 'bin', 'daemon'), Buffer.concat([daemon.subarray(0, 400_000), pseudoRandom('inserted', 3000), daemon.subarray(400_000)]))
  writeFileSync(join(v2, 'share', 'doc', 'README'), readFileSync(join(v2, 'share', 'doc', 'README'), 'utf8').replace('line 100:', 'line one hundred:'))
  writeFileSync(join(v2, 'share', 'doc', 'NEWS'), 'version 2\n')

  const store = await openStore()
  const nar1 = await collect(dumpPath(v1))
  const nar2 = await collect(dumpPath(v2))
  await store.ingest(identity(nar1), dumpPath(v1))
  const before = store.stats()
  await store.ingest(identity(nar2), dumpPath(v2))
  const after = store.stats()
  const fresh = after.uniqueBytes - before.uniqueBytes
  const fraction = fresh / nar2.length
  assert.ok(fraction < 0.15, `v2 added ${fresh} of ${nar2.length} bytes (${(100 * fraction).toFixed(1)} %)`)
  assert.ok(fraction > 0, 'the changes are stored')
  assert.ok(after.storedBytes < 1.2 * nar1.length, `stored ${after.storedBytes} for two NARs of ${nar1.length} and ${nar2.length} bytes`)
  assert.ok((await collect(store.render(identity(nar2).narHash)!)).equals(nar2))
  assert.ok((await collect(store.render(identity(nar1).narHash)!)).equals(nar1))
  await store.close()
})
