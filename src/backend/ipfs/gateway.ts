/**
 * The `ipfs+gateway+https://…` backend: a trustless HTTP gateway (the IPFS "trustless gateway"
 * specification). A NAR's DAG is asked for as one CAR stream (`?format=car&dag-scope=entity`,
 * resumed with `entity-bytes` after a cut), and block by block (`?format=raw`, `Accept:
 * application/vnd.ipld.raw`) from wherever the stream cannot go on — a gateway without CAR
 * support is read block by block throughout. Nothing a gateway says is believed: every block is
 * hashed against the CID it was asked for, and every leaf's size against its parent's record.
 * Read-only; nothing is kept (repeated blocks are asked to be sent again, `dups=y`).
 *
 * Absence: a 404 or 410 for a NAR's root block is the gateway's answer that it does not have the
 * NAR; any other status, a refused connection or a timeout is a failure. A missing block inside a
 * DAG whose root the gateway had is a failure too.
 */
import { Agent } from 'undici'
import { UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import type { AbortOptions, Backend, Locator, NarSource } from '../../types.ts'
import { CarFeed } from './car-feed.ts'
import { verifiedBlock } from './dag-reader.ts'
import { httpCarSource } from './http-gateway.ts'
import { cidOf, MAX_BLOCK } from './locator.ts'
import { openFile } from './open-file.ts'
import type { GatewayInit } from './spec.ts'

export class GatewayBackend implements Backend {
  readonly name: string
  readonly schemes = ['ipfs'] as const
  readonly #init: GatewayInit
  readonly #log: Logger
  /** For the CAR streams (one connection each, for a whole NAR: no cap); single blocks go through fetch. */
  readonly #http = new Agent({ connections: null, connect: { timeout: 10_000 } })

  constructor (init: GatewayInit, log: Logger) {
    this.#init = init
    this.#log = log
    this.name = `ipfs+gateway+${init.base}`
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const root = cidOf(locator.url)
    if (root === undefined) return undefined
    const feed = new CarFeed(root, [httpCarSource(this.#init.base, this.name, this.#http, true)], {
      local: async () => undefined,
      store: async () => {},
      log: this.#log
    })
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
    let source: NarSource | undefined
    try {
      source = await openFile(this.name, locator, async (cid, o) => {
        const streamed = await feed.block(cid, o.offset, o.signal)
        if (streamed !== undefined) return streamed.bytes
        try {
          return await raw(cid, o)
        } catch (err) {
          if (o.root && absent) return undefined
          throw err
        }
      }, this.#init, options.signal)
    } finally {
      if (source === undefined) feed.close()
    }
    if (source === undefined) return undefined
    const body = source.body
    source.body = (async function * () {
      try {
        yield * body
      } finally {
        feed.close()
      }
    })()
    return source
  }

  async close (): Promise<void> {
    // destroy, not close: a body nobody reads any more would keep close() waiting.
    if (!this.#http.destroyed) await this.#http.destroy()
  }
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
