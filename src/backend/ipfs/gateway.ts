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
import { request } from 'undici'
import { UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import type { AbortOptions, Backend, Locator, NarSource } from '../../types.ts'
import { createHttpDispatcher, readBody } from '../../util/http-client.ts'
import { CarFeed, closingFeed } from './car-feed.ts'
import { verifiedBlock } from './dag-reader.ts'
import { httpCarSource } from './http-gateway.ts'
import { cidOf, MAX_BLOCK } from './locator.ts'
import { openFile } from './open-file.ts'
import type { GatewayInit } from './spec.ts'
import { RAW_TYPE } from './trustless-gateway.ts'

export class GatewayBackend implements Backend {
  readonly name: string
  readonly schemes = ['ipfs'] as const
  readonly #init: GatewayInit
  readonly #log: Logger
  /** No cap on connections (a CAR stream holds one for a whole NAR); redirects are followed, as gateways send them. */
  readonly #http = createHttpDispatcher({ connections: null, connectTimeout: 10_000 })
  #closing: Promise<void> | undefined

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
    const raw = verifiedBlock(async (cid, o) => {
      const res = await request(`${this.#init.base}ipfs/${cid.toString()}?format=raw`, { dispatcher: this.#http, headers: { accept: RAW_TYPE }, signal: o.signal })
      if (res.statusCode !== 200) {
        await res.body.dump()
        throw new UpstreamError(this.name, `block ${cid.toString()}: HTTP ${res.statusCode}`, { status: res.statusCode })
      }
      const bytes = await readBody(res.body, MAX_BLOCK)
      if (bytes === undefined) throw new UpstreamError(this.name, `block ${cid.toString()} is larger than ${MAX_BLOCK} bytes`)
      return bytes
    }, this.name)
    return await closingFeed(feed, async () => await openFile(this.name, locator, async (cid, o) => {
      const streamed = await feed.block(cid, o.offset, o.signal)
      if (streamed !== undefined) return streamed.bytes
      try {
        return await raw(cid, o)
      } catch (err) {
        // The gateway's word that it does not have the NAR; for a block inside it, a failure.
        if (o.root && err instanceof UpstreamError && (err.status === 404 || err.status === 410)) return undefined
        throw err
      }
    }, this.#init, options.signal))
  }

  async close (): Promise<void> {
    // destroy, not close: a body nobody reads any more would keep close() waiting.
    this.#closing ??= this.#http.destroy()
    await this.#closing
  }
}
