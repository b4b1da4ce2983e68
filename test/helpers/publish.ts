/**
 * Publishes the NARs of a binary cache directory into a backend and records them in a mapper, the
 * way a publishing node would: each NAR is decoded from the cache, handed to `backend.publish`
 * (which checks it against the signed NarHash), and the locator it returns is recorded with the
 * signed narinfo, so another narswarm can find both through that mapper.
 */
import { createReadStream } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { decompress } from '../../src/nix/compression.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { openBackend, openMapper } from '../../src/registry.ts'
import { silentLogger } from '../../src/log.ts'
import type { AbortOptions, Locator } from '../../src/types.ts'

export interface Published { narInfo: NarInfo, locator: Locator }

/** Every narinfo of a `nix copy --to file://` cache. */
export async function readCache (dir: string): Promise<NarInfo[]> {
  const names = (await readdir(dir)).filter(n => n.endsWith('.narinfo'))
  return await Promise.all(names.map(async n => NarInfo.parse(await readFile(join(dir, n), 'utf8'))))
}

export async function publishCache (opts: { cacheDir: string, backend: string, mapper: string, stateDir: string, publishOptions?: Record<string, unknown> }): Promise<Published[]> {
  const components = { log: silentLogger(), stateDir: opts.stateDir }
  const backend = await openBackend(opts.backend, components)
  const mapper = await openMapper(opts.mapper, components)
  const published: Published[] = []
  try {
    for (const narInfo of await readCache(opts.cacheDir)) {
      const body = decompress(narInfo.compression, createReadStream(join(opts.cacheDir, narInfo.url)) as AsyncIterable<Uint8Array>)
      const locator = await backend.publish!({ narHash: narInfo.narHash, narSize: narInfo.narSize, body }, opts.publishOptions as AbortOptions)
      await mapper.record!(narInfo.narHash, locator, { narInfo: narInfo.toString() })
      published.push({ narInfo, locator })
    }
  } finally {
    await mapper.close?.()
    await backend.close?.()
  }
  return published
}
