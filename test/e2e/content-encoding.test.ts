/**
 * Binary caches whose server adds an HTTP Content-Encoding. Nix's S3 store gives every narinfo
 * one when written with `narinfo-compression=xz` (or br, zstd…): the real Nix 2.8 reads those
 * straight from the server, taking the layer off itself, and must read them through narswarm as
 * well. A server that compresses whatever it sends would also gzip the `.nar.xz` files: Nix ≥ 2.34
 * and Lix read those (their curl takes gzip off), Nix 2.8 does not ("input compression not
 * recognized"), so the control leaves NARs as they are. narswarm takes every layer off before it
 * parses, decodes, verifies and stores.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { makeNixEnv, nixSkip, type NixEnv } from '../helpers/nix.ts'
import { servedClosure, type Closure } from '../helpers/closure.ts'
import type { CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

describe('caches served with a Content-Encoding', { skip: nixSkip() }, () => {
  let nix: NixEnv
  let closure: Closure
  let upstream: CacheServer

  before(async () => {
    nix = await makeNixEnv()
    ;({ closure, upstream } = await servedClosure(nix))
    upstream.faults.push(
      // Each narinfo in one of the codings Nix's S3 store can give it.
      { match: p => p.endsWith('.narinfo') && p.charCodeAt(1) % 3 === 0, fault: { kind: 'encode', codings: ['xz'] } },
      { match: p => p.endsWith('.narinfo') && p.charCodeAt(1) % 3 === 1, fault: { kind: 'encode', codings: ['br'] } },
      { match: p => p.endsWith('.narinfo'), fault: { kind: 'encode', codings: ['zstd'] } }
    )
  })
  after(async () => {
    await upstream?.close()
    await nix?.cleanup()
  })

  const realise = async (substituter: string, store: string): Promise<string[]> => {
    await nix.run('nix-store', ['--store', store, '--realise', closure.top,
      '--option', 'substituters', substituter, '--option', 'trusted-public-keys', closure.publicKey,
      '--option', 'require-sigs', 'true'])
    return (await nix.run('nix-store', ['--store', store, '--query', '--requisites', closure.top])).trim().split('\n').sort()
  }

  test('control: the real Nix reads them straight from the server', async () => {
    const paths = await realise(upstream.url, `local?root=${join(nix.dir, 'store-direct')}`)
    assert.deepEqual(paths, [...closure.paths].sort())
  })

  test('through narswarm, the NARs gzipped too: every path arrives, verified and stored', async () => {
    upstream.faults.push({ match: p => p.endsWith('.nar.xz'), fault: { kind: 'encode', codings: ['gzip'] } })
    const before = upstream.requests.length
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
    try {
      const store = `local?root=${join(nix.dir, 'store-narswarm')}`
      assert.deepEqual(await realise(narswarm.url, store), [...closure.paths].sort())
      await nix.run('nix', ['store', 'verify', '--store', store, '--no-trust', '--trusted-public-keys', closure.publicKey, '-r', closure.top])
      for (const path of closure.paths) await narswarm.waitForLog(l => l.msg === 'NAR committed to the store' && l.storePath === path)
      const asked = upstream.requests.slice(before)
      assert.ok(asked.some(r => r.endsWith('.narinfo')) && asked.some(r => r.endsWith('.nar.xz')), 'narinfos and NARs came from the encoding server')
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  })

  test('a coding narswarm does not read: the narinfo is absent from that upstream, and the log says why', async () => {
    const hashPart = closure.note.slice('/nix/store/'.length, '/nix/store/'.length + 32)
    upstream.faults.unshift({ match: p => p === `/${hashPart}.narinfo`, fault: { kind: 'encode', codings: ['deflate'] } })
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${closure.publicKey}`])
    try {
      assert.equal((await fetch(`${narswarm.url}/${hashPart}.narinfo`)).status, 404)
      const line = await narswarm.waitForLog(l => l.msg === 'narinfo rejected, treated as absent from this upstream')
      assert.match(String(line.reason), /unsupported Content-Encoding 'deflate'/)
    } finally {
      assert.equal(await narswarm.stop(), 0)
      upstream.faults.shift()
    }
  })
})
