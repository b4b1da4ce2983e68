/**
 * The compliance suite every Mapper passes, run once per implementation (`mapperCompliance(label,
 * harness)`). A harness that cannot run here (a missing service) passes `skip` with the reason.
 */
import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { NixHash } from '../../src/nix/hash.ts'
import type { Locator, Mapper } from '../../src/types.ts'

export interface MapperHarness {
  setup: () => Promise<Mapper>
  teardown?: (mapper: Mapper) => Promise<void>
  /** Reason to skip the whole suite, or false. */
  skip?: string | false
  /** False for read-only mappers (no `record`): the round-trip cases then need `seed`. */
  writable?: boolean
  /**
   * Puts an entry into the index behind a read-only mapper (e.g. through the writable mapper a
   * server answers from); with it, the round-trip cases run against the read-only mapper too.
   */
  seed?: (narHash: NixHash, locator: Locator, options?: { narInfo?: string }) => Promise<void>
}

const randomHash = (): NixHash => NixHash.of('sha256', randomBytes(32))
const locator = (i: number): Locator => ({ url: `file:///srv/nars/${i}.nar.zst`, compression: 'zstd', fileSize: 1000 + i })

export function mapperCompliance (label: string, harness: MapperHarness): void {
  describe(`mapper compliance: ${label}`, { skip: harness.skip ?? false }, () => {
    let mapper: Mapper
    const readOnly = harness.writable === false && harness.seed === undefined ? 'read-only mapper' : false
    const record = async (narHash: NixHash, l: Locator, options?: { narInfo?: string }): Promise<void> => {
      await (harness.seed === undefined ? mapper.record!(narHash, l, options) : harness.seed(narHash, l, options))
    }
    beforeEach(async () => { mapper = await harness.setup() })
    afterEach(async () => { await harness.teardown?.(mapper); await mapper.close?.() })

    it('has a name', () => {
      assert.equal(typeof mapper.name, 'string')
      assert.ok(mapper.name.length > 0)
    })

    it('an unknown key resolves to []', async () => {
      assert.deepEqual(await mapper.lookup(randomHash()), [])
    })

    it('record then lookup round-trips; recording twice keeps one entry', { skip: readOnly }, async () => {
      const narHash = randomHash()
      await record(narHash, locator(1))
      await record(narHash, locator(1))
      assert.deepEqual(await mapper.lookup(narHash), [locator(1)])
      await record(narHash, locator(2))
      const both = await mapper.lookup(narHash)
      assert.equal(both.length, 2)
      assert.deepEqual([...both].sort((a, b) => a.url.localeCompare(b.url)), [locator(1), locator(2)])
    })

    it('a narinfo recorded with a locator is found by hash part and keys the NAR by its FileHash too', { skip: readOnly }, async (t) => {
      if (mapper.narInfo === undefined) { t.skip('this mapper keeps no narinfos'); return }
      const narHash = randomHash()
      const fileHash = randomHash()
      const hashPart = '0'.repeat(31) + '1'
      const text = `StorePath: /nix/store/${hashPart}-x\nURL: nar/a.nar.zst\nCompression: zstd\nFileHash: ${fileHash.toString()}\nFileSize: 1001\nNarHash: ${narHash.toString()}\nNarSize: 5000\nReferences: \n`
      await record(narHash, locator(1), { narInfo: text })
      assert.equal(await mapper.narInfo(hashPart), text)
      assert.equal(await mapper.narInfo('0'.repeat(31) + '2'), undefined)
      assert.deepEqual(await mapper.lookup(fileHash), [locator(1)])
    })

    it('100 concurrent records are all visible', { skip: readOnly }, async () => {
      const hashes = Array.from({ length: 100 }, randomHash)
      await Promise.all(hashes.map((h, i) => record(h, locator(i))))
      const found = await Promise.all(hashes.map(h => mapper.lookup(h)))
      found.forEach((l, i) => assert.deepEqual(l, [locator(i)]))
    })

    it('an aborted signal rejects with its reason', async () => {
      const reason = new Error('stop')
      await assert.rejects(mapper.lookup(randomHash(), { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason || (err as Error).name === 'AbortError')
    })

    it('close() is idempotent', async () => {
      await mapper.close?.()
      await mapper.close?.()
    })
  })
}
