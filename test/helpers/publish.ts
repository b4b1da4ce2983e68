/**
 * For tests that need a publishing node before they start it: `narswarm publish --from-cache` of a
 * binary cache directory (as `nix copy --to file://` wrote it) — the real command, so the NARs go
 * through narswarm's own publishing engine — and a look at what it recorded.
 */
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import type { Locator } from '../../src/types.ts'
import { runNarswarm } from './narswarm.ts'

/** Every narinfo of a `nix copy --to file://` cache. */
export async function readCache (dir: string): Promise<NarInfo[]> {
  const names = (await readdir(dir)).filter(n => n.endsWith('.narinfo')).sort()
  return await Promise.all(names.map(async n => NarInfo.parse(await readFile(join(dir, n), 'utf8'))))
}

/**
 * Publishes every path of `cacheDir` (its narinfos signed by `publicKey`) into `backend`, recorded
 * in `mapper` (default `sqlite:` in `stateDir`); fails unless every path was published. Returns
 * each narinfo of the cache with the locators the mapper now has for it.
 */
export async function publishCache (opts: { cacheDir: string, publicKey: string, backend: string, mapper?: string, stateDir: string }): Promise<Array<{ narInfo: NarInfo, locators: Locator[] }>> {
  const mapper = opts.mapper ?? 'sqlite:'
  const r = await runNarswarm(['publish', '--from-cache', `file://${opts.cacheDir}?trusted-public-keys=${opts.publicKey}`,
    '--backend', opts.backend, '--mapper', mapper, '--state-dir', opts.stateDir, '--log-level', 'warn'])
  const narInfos = await readCache(opts.cacheDir)
  assert.equal(r.code, 0, `narswarm publish failed:\n${r.stdout}\n${r.stderr}`)
  // Paths shared with a cache published before are skipped, not published twice.
  const m = /^published (\d+), skipped (\d+) .*failed 0/.exec(r.stdout)
  assert.ok(m !== null && Number(m[1]) + Number(m[2]) === narInfos.length, r.stdout)
  const index = await openMapper(mapper, { log: silentLogger(), stateDir: opts.stateDir })
  try {
    return await Promise.all(narInfos.map(async narInfo => ({ narInfo, locators: await index.lookup(narInfo.narHash) })))
  } finally {
    await index.close?.()
  }
}
