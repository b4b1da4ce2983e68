/**
 * The `ipfs+gateway+https://…` backend: a trustless HTTP gateway (the IPFS "trustless gateway"
 * specification), read one raw block at a time (`GET /ipfs/<cid>?format=raw`, `Accept:
 * application/vnd.ipld.raw`). Nothing a gateway says is believed: every block is hashed against
 * the CID it was asked for, and every leaf's size against its parent's record. Read-only.
 *
 * Absence: a 404 or 410 for a NAR's root block is the gateway's answer that it does not have the
 * NAR; any other status, a refused connection or a timeout is a failure. A missing block inside a
 * DAG whose root the gateway had is a failure too.
 */
import { UpstreamError } from '../../errors.ts'
import type { AbortOptions, Backend, Locator, NarSource } from '../../types.ts'
import { verifiedBlock } from './dag-reader.ts'
import { MAX_BLOCK } from './locator.ts'
import { openFile } from './open-file.ts'
import type { GatewayInit } from './spec.ts'

export class GatewayBackend implements Backend {
  readonly name: string
  readonly schemes = ['ipfs'] as const
  readonly #init: GatewayInit

  constructor (init: GatewayInit) {
    this.#init = init
    this.name = `ipfs+gateway+${init.base}`
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    let absent = false
    const raw = verifiedBlock(async (cid, o) => {
      const res = await fetch(`${this.#init.base}ipfs/${cid.toString()}?format=raw`, { headers: { accept: 'application/vnd.ipld.raw' }, signal: o.signal })
      if (res.status === 404 || res.status === 410) {
        await res.body?.cancel()
        absent = true
        throw new UpstreamError(this.name, `block ${cid.toString()}: HTTP ${res.status}`, { status: res.status })
      }
      if (res.status !== 200) {
        await res.body?.cancel()
        throw new UpstreamError(this.name, `block ${cid.toString()}: HTTP ${res.status}`, { status: res.status })
      }
      return await readCapped(res, cid.toString(), this.name)
    }, this.name)
    return await openFile(this.name, locator, async (cid, o) => {
      try {
        return await raw(cid, o)
      } catch (err) {
        if (o.root && absent) return undefined
        throw err
      }
    }, this.#init, options.signal)
  }

  async close (): Promise<void> {}
}

async function readCapped (res: Response, what: string, source: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let size = 0
  for await (const chunk of res.body ?? []) {
    size += chunk.length
    if (size > MAX_BLOCK) {
      await res.body?.cancel()
      throw new UpstreamError(source, `block ${what} is larger than ${MAX_BLOCK} bytes`)
    }
    parts.push(chunk)
  }
  return Buffer.concat(parts)
}
