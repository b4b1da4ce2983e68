/**
 * Writes a small signed binary cache without Nix: for each entry, the NAR bytes (stored with the
 * given compression) and a narinfo signed with a fresh key. For tests of narswarm's routing and
 * relay logic that need several upstreams quickly; real Nix-written caches are used end to end.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { compress } from '../../src/nix/compression.ts'

export interface CacheEntry { storePath: string, hashPart: string, nar: Buffer, narHash: NixHash }

export function makeEntry (name: string, nar: Buffer = randomBytes(300_000)): CacheEntry {
  const narHash = NixHash.of('sha256', nar)
  const storePath = makeStorePath('output:out', NixHash.of('sha256', randomBytes(32)), name)
  return { storePath, hashPart: storePath.slice(11, 43), nar, narHash }
}

export async function writeSignedCache (dir: string, entries: CacheEntry[], key = generateSecretKey('test-1'), compression = 'none'): Promise<{ publicKey: string }> {
  await mkdir(join(dir, 'nar'), { recursive: true })
  await writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n')
  for (const e of entries) {
    const parts: Uint8Array[] = []
    for await (const c of compress(compression, (async function * () { yield e.nar })())) parts.push(c)
    const file = Buffer.concat(parts)
    const ext = { none: '', xz: '.xz', zstd: '.zst', bzip2: '.bz2', br: '.br' }[compression] ?? ''
    const url = `nar/${NixHash.of('sha256', file).toNix32()}.nar${ext}`
    await writeFile(join(dir, url), file)
    const unsigned = NarInfo.build({ storePath: e.storePath, url, compression, narHash: e.narHash, narSize: e.nar.length, references: [], fileSize: file.length })
    await writeFile(join(dir, `${e.hashPart}.narinfo`), signNarInfo(unsigned, key.secret).toString())
  }
  return { publicKey: key.public }
}
