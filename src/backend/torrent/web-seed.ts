/**
 * The web seeds of a magnet link, used directly over HTTP when the swarm gives no metadata in time
 * (no peer online): a BEP 19 web seed holds the torrent's file, but not its info dictionary, so
 * WebTorrent cannot use it before some peer has sent the metadata. Here the NAR is streamed from the
 * first web seed that answers, written to disk and hashed into pieces on the way; if the pieces give
 * the magnet's info hash (narswarm's torrents are deterministic, see metainfo.ts) and the bytes give
 * the NarHash in the torrent's name, the file becomes a seed, exactly as if the swarm had delivered
 * it. Otherwise the bytes were still streamed to the caller, whose NarHash check decides.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { once } from 'node:events'
import { request, type Dispatcher } from 'undici'
import { UpstreamError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { NixHash } from '../../nix/hash.ts'
import { describeHttpError, isTimeout } from '../../util/http-client.ts'
import type { Magnet } from './magnet.ts'
import { infoHashOf, PieceHasher, torrentFile } from './metainfo.ts'
import type { SeedStore } from './seeds.ts'
import { narHashOfName } from './swarm.ts'

export interface WebSeedContext {
  dispatcher: Dispatcher
  seeds: SeedStore
  pieceLength: number
  trackers: string[]
  reseed: boolean
  stallTimeout: number
  log: Logger
  /** Whether the client already has a torrent with this info hash (then this copy is not kept). */
  inClient: (infoHash: string) => Promise<boolean>
}

export async function * fetchFromWebSeeds (magnet: Magnet, ctx: WebSeedContext, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const source = `torrent ${magnet.infoHash} web seed`
  const errors: string[] = []
  let timedOut = false
  let res: Dispatcher.ResponseData | undefined
  let url = ''
  for (url of magnet.webSeeds) {
    try {
      res = await request(url, { dispatcher: ctx.dispatcher, headersTimeout: ctx.stallTimeout, bodyTimeout: ctx.stallTimeout, ...(signal === undefined ? {} : { signal }) })
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      errors.push(`${url}: ${describeHttpError(err)}`)
      timedOut ||= isTimeout(err)
      continue
    }
    if (res.statusCode === 200) break
    errors.push(`${url}: HTTP ${res.statusCode}`)
    res.body.destroy()
    res = undefined
  }
  if (res === undefined) throw new UpstreamError(source, `no peer sent the metadata and no web seed delivered: ${errors.join('; ')}`, { timeout: timedOut })
  ctx.log.debug({ infoHash: magnet.infoHash, url }, 'no metadata from the swarm: fetching from the web seed')

  await mkdir(ctx.seeds.tmpDir, { recursive: true })
  const temp = join(ctx.seeds.tmpDir, `${magnet.infoHash}.${randomBytes(4).toString('hex')}.part`)
  const out = createWriteStream(temp)
  // A disk error is reported by the next write; the listener keeps it from being an uncaught event.
  out.on('error', () => {})
  const pieces = new PieceHasher(ctx.pieceLength)
  const sha256 = createHash('sha256')
  let complete = false
  try {
    for await (const chunk of res.body) {
      const bytes = chunk as Uint8Array
      pieces.update(bytes)
      sha256.update(bytes)
      if (out.errored !== null) throw out.errored
      if (!out.write(bytes)) await once(out, 'drain')
      yield bytes
    }
    complete = true
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw new UpstreamError(source, describeHttpError(err), { cause: err, timeout: isTimeout(err) })
  } finally {
    out.end()
    await once(out, 'close').catch(() => {})
    if (!complete) { res.body.destroy(); await rm(temp, { force: true }) }
  }
  await keep(magnet, ctx, temp, pieces, sha256.digest()).catch(async err => {
    ctx.log.warn({ infoHash: magnet.infoHash, err: (err as Error).message }, 'could not seed what the web seed delivered')
    await rm(temp, { force: true })
  })
}

/** Seeds the file when it is the torrent the magnet names and the NAR its name names. */
async function keep (magnet: Magnet, ctx: WebSeedContext, temp: string, pieces: PieceHasher, sha256: Uint8Array): Promise<void> {
  const name = magnet.name ?? ''
  const narHash = narHashOfName(name)
  const info = { name, length: pieces.length, pieceLength: ctx.pieceLength, pieces: pieces.finish() }
  const seedable = ctx.reseed && narHash !== undefined && narHash.equals(new NixHash('sha256', sha256)) &&
    infoHashOf(info) === magnet.infoHash && !(await ctx.inClient(magnet.infoHash))
  if (!seedable) {
    await rm(temp, { force: true })
    return
  }
  await ctx.seeds.adoptFile(temp, torrentFile(info, [...new Set([...magnet.trackers, ...ctx.trackers])], magnet.webSeeds))
  ctx.log.info({ infoHash: magnet.infoHash, name }, 'seeding a NAR fetched from its web seed')
}
