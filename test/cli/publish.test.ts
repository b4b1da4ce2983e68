/**
 * `narswarm publish` as a user runs it: 100,000 paths through `--paths-from` (a file and standard
 * input, never a command line), records that no reader would trust refused out loud, and an IPFS
 * repository held by a running node refused with the reason.
 */
import { before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateSecretKey } from '../../src/nix/signature.ts'
import { makeEntry, writeSignedCache, type CacheEntry } from '../helpers/signed-cache.ts'
import { runNarswarm, startNarswarm } from '../helpers/narswarm.ts'
import { tempDir } from '../helpers/temp.ts'

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz'
const randomHashPart = (): string => Array.from(randomBytes(32), b => NIX32[b % 32]).join('')

describe('narswarm publish', () => {
  let dir: string
  let cache: string
  let entries: CacheEntry[]
  const key = generateSecretKey('publish-cli-test-1')
  const other = generateSecretKey('someone-else-1')

  before(async () => {
    dir = tempDir('narswarm-publish-cli-')
    cache = join(dir, 'cache')
    entries = Array.from({ length: 1000 }, (_, i) => makeEntry(`p-${i}`, randomBytes(64)))
    await writeSignedCache(cache, entries, key)
  })

  it('takes 100,000 paths from a file and from standard input', async () => {
    // 1,000 paths the cache has, among 99,000 it has not; half from a file, half on stdin.
    const lines = [...entries.map(e => e.storePath), ...Array.from({ length: 99_000 }, randomHashPart)].sort(() => Math.random() - 0.5)
    const file = join(dir, 'paths')
    await writeFile(file, `# from a file\n${lines.slice(0, 50_000).join('\n')}\n`)
    const r = await runNarswarm(['publish', '--from-cache', `file://${cache}?trusted-public-keys=${key.public}`, '--narinfo-only',
      '--paths-from', file, '--paths-from', '-', '--state-dir', join(dir, 'state-many'), '--log-level', 'info'], { input: `${lines.slice(50_000).join('\n')}\n` })
    assert.equal(r.code, 1, r.stderr.slice(0, 2000))
    assert.match(r.stdout, /^published 1000, skipped 0 \(already published\), excluded 0, failed 99000 — .* in \d+s/)
    assert.doesNotMatch(r.stderr, /E2BIG/)
    // Progress shows from the start, before the paths are even read.
    const messages = r.stderr.split('\n').filter(Boolean).map(l => (JSON.parse(l) as { msg: string }).msg)
    assert.equal(messages[0], 'publish progress: listing paths', messages.slice(0, 5).join(' | '))
  })

  it('a narinfo no reader would trust is not recorded: a warning and exit 1, not silence', async () => {
    const r = await runNarswarm(['publish', '--from-cache', `file://${cache}?require-sigs=false`, '--narinfo-only', ...entries.slice(0, 3).map(e => e.storePath),
      '--state-dir', join(dir, 'state-untrusted'), '--log-level', 'warn'])
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stdout, /^published 0, .*failed 3 /)
    assert.match(r.stdout, /not recorded: no signature by a key its readers trust/)
    assert.match(r.stderr, /warning: 3 paths not recorded: no signature by a key the index's readers trust/)
    // The same paths with our own signature are trusted (their NARs are read, checked and signed).
    const signed = join(dir, 'signing.key')
    await writeFile(signed, key.secret)
    const ok = await runNarswarm(['publish', '--from-cache', `file://${cache}?require-sigs=false`, ...entries.slice(0, 3).map(e => e.storePath),
      '--sign-key', signed, '--backend', `file://${join(dir, 'nars')}`, '--state-dir', join(dir, 'state-signed'), '--log-level', 'warn'])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
    assert.match(ok.stdout, /^published 3, /)
  })

  it("the cache's key on the --from-cache URL counts as trusted, whatever trusted-public-keys says", async () => {
    const r = await runNarswarm(['publish', '--from-cache', `file://${cache}?trusted-public-keys=${key.public}`, '--narinfo-only', ...entries.slice(0, 3).map(e => e.storePath),
      '--trusted-public-keys', other.public, '--state-dir', join(dir, 'state-url-key'), '--log-level', 'warn'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /^published 3, /)
  })

  it('an IPFS repository held by a running node is refused with the reason; free again once it stops', async () => {
    const spec = 'ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none'
    const node = await startNarswarm(['--backend', spec])
    const publish = async (): Promise<{ code: number | null, stdout: string, stderr: string }> => await runNarswarm(['publish', '--from-cache', `file://${cache}?trusted-public-keys=${key.public}`,
      entries[0]!.storePath, '--backend', spec, '--state-dir', node.stateDir, '--mapper', `sqlite://${join(dir, 'ipfs-index.sqlite')}`, '--log-level', 'warn'])
    try {
      const refused = await publish()
      assert.equal(refused.code, 1, refused.stdout + refused.stderr)
      assert.match(refused.stderr, new RegExp(`the repository .* is in use by a running narswarm \\(pid ${node.child.pid}\\)`))
      assert.equal(refused.stderr.trimEnd().split('\n').length, 1)
      node.child.kill('SIGTERM')
      await new Promise(resolve => node.child.once('exit', resolve))
      const freed = await publish()
      assert.equal(freed.code, 0, freed.stdout + freed.stderr)
      assert.match(freed.stdout, /^published 1, /)
    } finally {
      await node.stop()
    }
  })
})
