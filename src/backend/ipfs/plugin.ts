/**
 * The `ipfs` plug-in: one registry entry for the three IPFS backends (embedded node, kubo RPC,
 * trustless gateway), told apart by the spec's scheme. Each implementation is imported only when
 * a spec names it, so Helia and libp2p are loaded only for an `ipfs:` spec.
 */
import type { BackendPlugin } from '../../types.ts'
import { parseIpfs, type IpfsInit } from './spec.ts'

export const plugin: BackendPlugin<IpfsInit> = {
  scheme: 'ipfs',
  summary: 'IPFS: an embedded node (ipfs:?listen=…&bootstrap=…&routing=…), kubo (ipfs+http://127.0.0.1:5001) or a trustless gateway (ipfs+gateway+https://…)',
  parse: parseIpfs,
  async create (init, components) {
    const log = components.log
    if (init.kind === 'embedded') return await (await import('./embedded.ts')).createEmbedded(init, components.stateDir, log)
    if (init.kind === 'kubo') return await (await import('./kubo.ts')).createKubo(init, log)
    return new (await import('./gateway.ts')).GatewayBackend(init, log)
  }
}
