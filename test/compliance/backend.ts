/**
 * The compliance suite every Backend passes, run once per implementation. A source may deliver the
 * bytes as stored (compressed, labelled) or decoded (`none`); the suite decodes by the label. Backends that cannot
 * publish are given `seed`, which stores bytes the way the backend's source expects them and
 * returns their locator.
 */
import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { decompress } from '../../src/nix/compression.ts'
import type { Backend, Locator, NarSource } from '../../src/types.ts'
import { sha256Hex, upload } from '../helpers/bytes.ts'

export interface BackendHarness {
  setup: () => Promise<Backend>
  teardown?: (backend: Backend) => Promise<void>
  skip?: string | false
  /** Whether the backend implements `publish`. */
  publishes: boolean
  /** For backends without `publish`: makes `bytes` available and returns the locator. */
  seed?: (backend: Backend, bytes: Uint8Array) => Promise<Locator>
  /** A locator in this backend's scheme that names nothing. */
  missing: (backend: Backend) => Locator
}

const MIB = 1 << 20
/** Sizes from attic's chunking tests: the empty NAR, one byte, chunk boundaries, 32 MiB ± 1. */
export const BODY_SIZES = [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 32 * MIB - 1, 32 * MIB, 32 * MIB + 1]


/** Hash of the NAR a source delivers, decoded by the compression the source says it has. */
async function sha (source: NarSource): Promise<{ hex: string, size: number }> {
  const h = createHash('sha256')
  let size = 0
  for await (const c of decompress(source.compression, source.body)) { h.update(c); size += c.length }
  return { hex: h.digest('hex'), size }
}

export function backendCompliance (label: string, harness: BackendHarness): void {
  describe(`backend compliance: ${label}`, { skip: harness.skip ?? false }, () => {
    let backend: Backend
    beforeEach(async () => { backend = await harness.setup() })
    afterEach(async () => { await harness.teardown?.(backend); await backend.close?.() })

    const put = async (bytes: Uint8Array): Promise<Locator> => {
      if (backend.publish !== undefined) {
        return await backend.publish(upload(bytes))
      }
      assert.ok(harness.seed, 'a backend without publish needs a seed function in its harness')
      return await harness.seed(backend, bytes)
    }

    it('has a name and schemes', () => {
      assert.ok(backend.name.length > 0)
      assert.ok(backend.schemes.length > 0)
    })

    it('an unknown locator resolves to undefined', async () => {
      assert.equal(await backend.open(harness.missing(backend)), undefined)
    })

    for (const size of BODY_SIZES) {
      it(`stores and returns ${size} bytes exactly`, async () => {
        const bytes = randomBytes(size)
        const locator = await put(bytes)
        assert.ok(backend.schemes.includes(new URL(locator.url).protocol.slice(0, -1).split('+')[0]!), `locator ${locator.url} in a scheme of ${backend.schemes.join(', ')}`)
        const source = await backend.open(locator)
        assert.ok(source !== undefined)
        const { hex, size: got } = await sha(source)
        assert.equal(got, size)
        assert.equal(hex, sha256Hex(bytes))
      })
    }

    it('publishing the same NAR twice gives a locator that still opens', { skip: harness.publishes ? false : 'this backend does not publish' }, async () => {
      const bytes = randomBytes(1000)
      const a = await put(bytes)
      const b = await put(bytes)
      assert.equal(a.url, b.url)
      assert.ok(await backend.open(b))
    })

    it('aborting mid-stream ends the body early', async () => {
      const locator = await put(randomBytes(8 * MIB))
      const controller = new AbortController()
      const source = await backend.open(locator, { signal: controller.signal })
      assert.ok(source !== undefined)
      let read = 0
      await assert.rejects((async () => {
        for await (const chunk of source.body) {
          read += chunk.length
          if (read > 0) controller.abort(new Error('enough'))
        }
      })())
      assert.ok(read < 8 * MIB, 'the body ended early')
    })

    it('100 concurrent opens all deliver the bytes', async () => {
      const bytes = randomBytes(100_000)
      const locator = await put(bytes)
      const want = sha256Hex(bytes)
      const results = await Promise.all(Array.from({ length: 100 }, async () => {
        const source = await backend.open(locator)
        return (await sha(source!)).hex
      }))
      assert.ok(results.every(r => r === want))
    })

    it('close() is idempotent', async () => {
      await backend.close?.()
      await backend.close?.()
    })
  })
}
