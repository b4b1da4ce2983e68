/**
 * The streamed walk over a cache: every wanted path once, after the references it has among the
 * wanted ones (or all of them for a closure), through chains deeper than the narinfos it keeps.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { CacheWalk, type Walked } from '../../src/publish/cache-walk.ts'
import type { NarInfoAnswer } from '../../src/upstream/upstream.ts'

/** A chain of `n` paths, each referring to the next (the last to none), and a cache of them. */
function chain (n: number): { hashParts: string[], fetch: (h: string) => Promise<NarInfoAnswer>, fetched: () => number } {
  const paths = Array.from({ length: n }, (_, i) => makeStorePath('output:out', NixHash.of('sha256', randomBytes(32)), `p-${i}`))
  const texts = new Map(paths.map((storePath, i) => [storePath.slice(11, 43), NarInfo.build({
    storePath, url: `nar/${i}.nar`, compression: 'none', narHash: NixHash.of('sha256', randomBytes(32)), narSize: 100, references: i + 1 < n ? [paths[i + 1]!] : []
  }).toString()]))
  let fetched = 0
  return {
    hashParts: paths.map(p => p.slice(11, 43)),
    fetch: async h => {
      fetched++
      const text = texts.get(h)
      return text === undefined ? { kind: 'absent', status: 404 } : { kind: 'found', narInfo: NarInfo.parse(text), text }
    },
    fetched: () => fetched
  }
}

async function walked (source: AsyncIterable<Walked>): Promise<{ order: string[], failed: string[] }> {
  const order: string[] = []
  const failed: string[] = []
  for await (const w of source) {
    if ('failed' in w) failed.push(w.failed.path)
    else order.push(w.narInfo.hashPart)
  }
  return { order, failed }
}

describe('cache walk', () => {
  it('a closure deeper than the narinfos it keeps: every path once, references first', async () => {
    const c = chain(5000)
    const { order, failed } = await walked(new CacheWalk('test', c.fetch).walk([c.hashParts[0]!], { closure: true, window: 8 }))
    assert.deepEqual(failed, [])
    assert.deepEqual(order, [...c.hashParts].reverse())
    assert.ok(c.fetched() > 5000 && c.fetched() < 2 * 5000, `narinfos read again below the kept depth, and only there (${c.fetched()} reads)`)
  })

  it('named paths: only those, their references among them first, absent ones failed, each once across walks', async () => {
    const c = chain(20)
    const walk = new CacheWalk('test', c.fetch)
    const wanted = [c.hashParts[3]!, c.hashParts[10]!, c.hashParts[4]!, '0'.repeat(32)]
    const first = await walked(walk.walk(wanted, { closure: false, window: 2 }))
    // 3 refers to 4 (named, so first); 4 to 5 (not named, so not published); 10 on its own.
    assert.deepEqual(first.order, [c.hashParts[4]!, c.hashParts[3]!, c.hashParts[10]!])
    assert.deepEqual(first.failed, ['0'.repeat(32)])
    const again = await walked(walk.walk([c.hashParts[4]!, c.hashParts[6]!], { closure: false, window: 2 }))
    assert.deepEqual(again.order, [c.hashParts[6]!], 'a path emitted by an earlier walk is not emitted again')
  })
})
