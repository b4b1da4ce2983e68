/**
 * Narinfos from LAN peers, asked only when every upstream failed (never when one said 404: the
 * swarm's silence is not absence). The best few peers are asked at once with tight timeouts; the
 * first answer that is a narinfo of the store path asked for, signed by a trusted key, is returned
 * (the substituter checks it again). Undefined when no peer has one.
 */
import type { Logger } from '../log.ts'
import { trustedKeyMap, verifyNarInfo, type PublicKey } from '../nix/signature.ts'
import type { AbortOptions } from '../types.ts'
import { parseServedNarInfo } from '../upstream/upstream.ts'
import type { PeerClient, RequestTimeouts } from './client.ts'
import type { PeerTable } from './table.ts'

export interface NarInfoFallbackInit {
  table: PeerTable
  client: PeerClient
  trustedKeys: Iterable<string>
  log: Logger
  fanout?: number
  timeouts?: RequestTimeouts
}

export function peerNarInfoFallback (init: NarInfoFallbackInit): (hashPart: string, options?: AbortOptions) => Promise<string | undefined> {
  const keys: ReadonlyMap<string, PublicKey> = trustedKeyMap([...init.trustedKeys])
  const fanout = init.fanout ?? 3
  const timeouts = init.timeouts ?? { answer: 1_000, stall: 1_000 }
  return async (hashPart, options = {}) => {
    const peers = init.table.available().slice(0, fanout)
    if (peers.length === 0) return undefined
    const controller = new AbortController()
    const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal])
    return await new Promise<string | undefined>(resolve => {
      let left = peers.length
      const done = (): void => { if (--left === 0) resolve(undefined) }
      for (const peer of peers) {
        const t0 = performance.now()
        init.client.narInfo(peer, hashPart, timeouts, signal).then(text => {
          init.table.success(peer, performance.now() - t0)
          if (text === undefined) return
          const served = parseServedNarInfo(text, hashPart)
          if (served.kind === 'rejected' || verifyNarInfo(served.narInfo, keys).validKeyNames.length === 0) {
            init.table.integrityFailure(peer, `narinfo for ${hashPart} rejected: ${served.kind === 'rejected' ? served.reason : 'not signed by a trusted key'}`)
            return
          }
          init.table.served(peer, { narInfos: 1 })
          init.log.debug({ peer, hashPart }, 'narinfo from a peer')
          controller.abort()
          resolve(text)
        }, (err: unknown) => {
          if (!signal.aborted) init.table.failure(peer, (err as Error).message)
        }).finally(done)
      }
    })
  }
}
