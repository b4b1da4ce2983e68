/**
 * The peer listener as an ordinary binary cache, for Nix and ncro on other machines of the LAN
 * that do not run narswarm (announced as `_nix-serve._tcp`, discovery.ts). It serves exactly what
 * the peer protocol shares (shares.ts: NARs held whole in the chunk store, named by a narinfo a
 * trusted key signed), at the paths Nix asks for:
 *
 *   GET|HEAD /nix-cache-info            StoreDir, WantMassQuery, Priority
 *   GET|HEAD /<hash part>.narinfo       the signed narinfo, its URL pointing here
 *   GET|HEAD /nar/<nix32 NarHash>.nar   the NAR, rendered from the store, each chunk checked
 *   GET|HEAD /nar/<nix32 NarHash>.nar.zst  the same as zstd, its stored chunks sent as they are
 *
 * The narinfo's signature covers the store path, NarHash, NarSize and references, not where the
 * NAR lies or how it is compressed, so pointing it here keeps it valid. Nix and Lix that decode
 * zstd (their User-Agent says so) get `.nar.zst`, others `.nar`. There is no Range support: a
 * broken transfer is fetched again. With a group key none of this is served: Nix cannot sign
 * its requests.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ChunkFrames, ChunkStore } from '../chunk/types.ts'
import { serializeCacheInfo } from '../nix/cache-info.ts'
import { NixHash } from '../nix/hash.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { NAR_PATH, NARINFO_PATH } from '../server/cache-paths.ts'
import { sendStatus, sendText } from '../server/respond.ts'
import { rewrite } from '../server/substituter.ts'
import { decodesZstd } from '../server/zstd-nar.ts'
import type { PeerShares } from './shares.ts'

/** Nix prefers caches with a lower priority; a LAN node comes before cache.nixos.org (40). */
export const LAN_CACHE_PRIORITY = 30

export interface LanCache {
  storeDir: string
  store: ChunkStore
  shares: PeerShares
  /** Writes with backpressure and the upload limit; false when the client went away. */
  write: (res: ServerResponse, bytes: Uint8Array, signal: AbortSignal) => Promise<boolean>
}

/** Whether `path` is one of the binary cache's (any other is the peer protocol's or unknown). */
export function isLanCachePath (path: string): boolean {
  return path === '/nix-cache-info' || NARINFO_PATH.test(path) || NAR_PATH.test(path)
}

/** Answers a binary cache request (`isLanCachePath`); 404 for what is not shared. */
export async function serveLanCache (cache: LanCache, req: IncomingMessage, res: ServerResponse, path: string, signal: AbortSignal): Promise<void> {
  // The small answers go out whole, past the upload limit; only NARs are throttled.
  if (path === '/nix-cache-info') {
    sendText(res, serializeCacheInfo({ storeDir: cache.storeDir, wantMassQuery: true, priority: LAN_CACHE_PRIORITY }), 'text/x-nix-cache-info', 'no-cache')
    return
  }
  let m = NARINFO_PATH.exec(path)
  if (m !== null) {
    const text = cache.shares.narInfo(m[1]!)
    if (text === undefined) { sendStatus(res, 404); return }
    // What is shared changes as NARs are stored and evicted: no caching.
    sendText(res, rewrite(NarInfo.parse(text), decodesZstd(req.headers['user-agent']) ? 'zstd' : 'none'), 'text/x-nix-narinfo', 'no-cache')
    return
  }
  m = NAR_PATH.exec(path)
  const narHash = m === null ? undefined : NixHash.fromNix32('sha256', m[1]!)
  const manifest = narHash === undefined ? undefined : cache.shares.manifest(narHash)
  if (narHash === undefined || manifest === undefined) { sendStatus(res, 404); return }
  const zstd = m![2] !== undefined
  res.writeHead(200, { 'content-type': zstd ? 'application/zstd' : 'application/x-nix-nar', ...(zstd ? {} : { 'content-length': String(manifest.narSize) }) })
  if (req.method === 'HEAD') { res.end(); return }
  try {
    const body = zstd ? zstdBody(cache.store.renderFrames(narHash, { signal })) : cache.store.render(narHash, { signal })
    if (body === undefined) throw new Error('evicted since')
    for await (const bytes of body) {
      if (!await cache.write(res, bytes, signal)) return
    }
    res.end()
  } catch {
    // A chunk found corrupt halfway (the store then drops the NAR), or the NAR evicted since the
    // manifest was read: the transfer is cut, and Nix takes no NAR that does not match its NarHash.
    res.destroy()
  }
}

/** A NAR rendered as zstd, its chunks' frames one after another; undefined when the store no longer holds it. */
function zstdBody (chunks: AsyncIterable<ChunkFrames> | undefined): AsyncIterable<Uint8Array> | undefined {
  return chunks === undefined ? undefined : (async function * () { for await (const chunk of chunks) yield * chunk.frames })()
}
