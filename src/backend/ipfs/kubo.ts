/**
 * The `ipfs+http://host:5001` backend: a kubo daemon the user already runs, through its RPC API
 * (kubo-rpc-client). Reading walks the DAG with `block/get`, hashing every block against its CID
 * (the daemon is another program, so its answers are checked like any peer's). Publishing imports
 * the NAR here, with narswarm's own import parameters, and hands kubo the finished blocks with
 * `block/put`, so a NAR gets the same CID whether it was published through kubo or through the
 * embedded node; the root is then pinned (unless `pin=false`) so kubo's garbage collector keeps
 * it, and kubo's own reprovider announces it.
 *
 * At start-up the daemon must answer `id`: a wrong address is one clear configuration error, not a
 * failure on every later request.
 */
import { create, type BlockPutOptions, type KuboRPCClient } from 'kubo-rpc-client'
import type { CID } from 'multiformats/cid'
import { ConfigError, IntegrityError, UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import type { AbortOptions, Backend, Locator, NarSource, NarUpload } from '../../types.ts'
import { blockBytes } from './block-bytes.ts'
import { verifiedBlock } from './dag-reader.ts'
import { describeHttpError } from '../../util/http-client.ts'
import { DAG_PB, locatorOf } from './locator.ts'
import { openFile } from './open-file.ts'
import { importNar } from './publish.ts'
import type { KuboInit } from './spec.ts'

export class KuboBackend implements Backend {
  readonly name: string
  readonly schemes = ['ipfs'] as const
  readonly #client: KuboRPCClient
  readonly #init: KuboInit

  constructor (init: KuboInit, client: KuboRPCClient) {
    this.#init = init
    this.#client = client
    this.name = `ipfs+${init.api}`
  }

  async open (locator: Locator, options: AbortOptions = {}): Promise<NarSource | undefined> {
    const get = verifiedBlock(async (cid, o) => await this.#call('block/get', async () => await this.#client.block.get(cid, { signal: o.signal })), this.name)
    return await openFile(this.name, locator, get, this.#init, options.signal)
  }

  async publish (nar: NarUpload, options: AbortOptions = {}): Promise<Locator> {
    const signal = options.signal
    const put = async (cid: CID, block: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<CID> => {
      const bytes = block instanceof Uint8Array ? block : await blockBytes(block)
      // kubo's own option names (cid-codec), not the client's legacy `format`; our blocks are at most
      // 1 MiB, kubo's limit, so no allow-big-block.
      // The client copies unknown options into the query string as they are.
      const params = { 'cid-codec': cid.code === DAG_PB ? 'dag-pb' : 'raw', mhtype: 'sha2-256' } as BlockPutOptions
      const got = await this.#call('block/put', async () => await this.#client.block.put(bytes, signal === undefined ? params : { ...params, signal }))
      if (got.code !== cid.code || !Buffer.from(got.multihash.bytes).equals(Buffer.from(cid.multihash.bytes))) {
        throw new IntegrityError(`${this.name}: kubo stored block ${cid.toString()} as ${got.toString()}`)
      }
      return cid
    }
    const root = await importNar(nar, { put }, options)
    if (this.#init.pin) await this.#call('pin/add', async () => await this.#client.pin.add(root, signal === undefined ? {} : { signal }))
    return { url: locatorOf(root), compression: 'none', fileSize: nar.narSize }
  }

  async close (): Promise<void> {}

  async #call<T> (what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    } catch (err) {
      if (err instanceof IntegrityError || (err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError') throw err
      throw new UpstreamError(this.name, `${what}: ${describeHttpError(err)}`, { cause: err })
    }
  }
}

export async function createKubo (init: KuboInit, log: Logger): Promise<KuboBackend> {
  const client = create({ url: `${init.api}/api/v0` })
  try {
    const id = await client.id({ signal: AbortSignal.timeout(Math.min(init.timeout, 10_000)) })
    log.info({ api: init.api, peerId: id.id.toString(), agent: id.agentVersion }, 'kubo daemon reachable')
  } catch (err) {
    throw new ConfigError(`ipfs+http backend: no kubo RPC API answers at ${init.api} (${describeHttpError(err)}); is the daemon running, and is this its API address (kubo's Addresses.API)?`)
  }
  return new KuboBackend(init, client)
}
