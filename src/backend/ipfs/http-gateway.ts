/**
 * The trustless gateway over plain HTTP, both ends. An embedded node can serve its blocks on HTTP
 * ports of its own (`gateway-listen`), announced to its peers as `/ip4/…/tcp/…/http` addresses;
 * a peer that sees such an address fetches CAR streams there instead of over its libp2p
 * connection, and a `ipfs+gateway+https://…` backend fetches CAR streams from its gateway.
 *
 * Plain HTTP skips libp2p's encryption and stream multiplexing, which cost a fetcher most of its
 * time (docs/ipfs.md has the figures), and loses nothing a fetcher relies on: every block is
 * checked against its CID and every NAR against its NarHash, whoever sent it. What it does give
 * up is privacy — someone on the path sees which CIDs are fetched — which is why serving it is a
 * choice. A peer's HTTP address is only used on the address its libp2p connection comes from, so
 * a peer cannot turn a fetcher's requests on some other host.
 */
import { createServer, type Server } from 'node:http'
import { networkInterfaces } from 'node:os'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Agent, request, type Dispatcher } from 'undici'
import type { Logger } from '../../log.ts'
import { ExpiringLru } from '../../util/lru.ts'
import type { CarSource } from './car-feed.ts'
import { answerGatewayRequest, CAR_TYPE, carRequest, type LocalBlock } from './trustless-gateway.ts'

export interface GatewayListener {
  /** What peers are told: one `/ip4|ip6/<address>/tcp/<port>/http` per address served on. */
  announce: string[]
  /** Requests answered so far. */
  readonly answered: number
  close: () => Promise<void>
}

/** Serves `local` as a trustless gateway on each TCP multiaddr of `listen` (`/ip4/0.0.0.0/tcp/4002`). */
export async function listenGateway (listen: string[], local: LocalBlock, log: Logger): Promise<GatewayListener> {
  const servers: Server[] = []
  const announce: string[] = []
  let answered = 0
  const close = async (): Promise<void> => {
    await Promise.all(servers.map(async s => await new Promise<void>(resolve => { s.close(() => resolve()); s.closeAllConnections() })))
  }
  try {
    for (const addr of listen) {
      const [, family, host, port] = /^\/(ip4|ip6)\/([^/]+)\/tcp\/(\d+)$/.exec(addr)!
      const server = createServer((req, res) => {
        answered++
        void answer(req.method ?? 'GET', req.url ?? '/', req.headers.accept ?? null, local, res).catch((err: Error) => {
          log.debug({ url: req.url, err: err.message }, 'ipfs http gateway answer not completed')
          res.destroy()
        })
      })
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        // ipv6Only: `::` would take the IPv4 port as well, and `/ip4/0.0.0.0` next to it would fail.
        server.listen({ port: Number(port), host, ipv6Only: family === 'ip6' }, () => { server.off('error', reject); resolve() })
      })
      // Later errors (accept failing with EMFILE, say) are the server's to report, never a crash.
      server.on('error', err => { log.warn({ addr, err: err.message }, 'ipfs http gateway error') })
      servers.push(server)
      const bound = (server.address() as { port: number }).port
      for (const ip of concreteAddresses(family as 'ip4' | 'ip6', host!)) announce.push(`/${family}/${ip}/tcp/${bound}/http`)
    }
  } catch (err) {
    await close()
    throw err
  }
  return { announce, get answered () { return answered }, close }
}

async function answer (method: string, url: string, accept: string | null, local: LocalBlock, res: import('node:http').ServerResponse): Promise<void> {
  const reply = await answerGatewayRequest(method, new URL(url, 'http://gateway'), accept, local)
  res.writeHead(reply.status, reply.headers)
  if (reply.body === undefined) { res.end(); return }
  await pipeline(Readable.from(reply.body, { objectMode: false }), res)
}

/** The addresses a wildcard listen address stands for (link-local IPv6 ones need a zone, and are left out). */
function concreteAddresses (family: 'ip4' | 'ip6', host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [host]
  const want = family === 'ip4' ? 'IPv4' : 'IPv6'
  return Object.values(networkInterfaces()).flatMap(list => list ?? [])
    .filter(i => i.family === want && !i.address.startsWith('fe80:'))
    .map(i => i.address)
}

/** What a CAR response may buffer ahead of the reader; undici's 64 KiB default left the stream stalling between reads. */
const BODY_BUFFER = 1 << 20

/**
 * A trustless gateway at `base` (ending in '/') as a CAR source. `dups`: whether to ask for blocks
 * that repeat in the file to be sent again (a fetcher that keeps no blocks needs them).
 */
export function httpCarSource (base: string, name: string, dispatcher: Dispatcher, dups: boolean): CarSource {
  return {
    name,
    open: async (root, range, signal) => {
      const { path, accept } = carRequest(root, range, dups)
      const res = await request(`${base}${path}`, { dispatcher, signal, highWaterMark: BODY_BUFFER, headers: { accept } })
      if (res.statusCode !== 200) {
        await res.body.dump()
        if (res.statusCode === 404 || res.statusCode === 410) return undefined
        throw new Error(`HTTP ${res.statusCode}`)
      }
      const type = String(res.headers['content-type'] ?? '')
      if (!type.startsWith(CAR_TYPE)) {
        await res.body.dump()
        throw new Error(`answered ${type === '' ? 'without a content type' : type}, not a CAR`)
      }
      res.body.on('error', () => {}) // the feed sees failures through iteration; this only keeps a late one quiet
      return res.body
    }
  }
}

/**
 * The `http://<address>:<port>/` of the gateways `peerAddrs` (what the peer itself signed, not what
 * others say of it) announces on `remoteIp`, the address its libp2p connection comes from.
 */
export function peerGatewayBases (peerAddrs: string[], remoteIp: string): string[] {
  const bases: string[] = []
  for (const addr of peerAddrs) {
    const m = /^\/(ip4|ip6)\/([^/]+)\/tcp\/(\d+)\/http$/.exec(addr)
    if (m === null || m[2] !== remoteIp) continue
    bases.push(m[1] === 'ip6' ? `http://[${m[2]}]:${m[3]}/` : `http://${m[2]}:${m[3]}/`)
  }
  return bases
}

/** How long a peer's HTTP gateway that failed is left alone (its libp2p connection serves meanwhile). */
const FAILED_GATEWAY_MS = 60_000

/**
 * The embedded node's way to its peers' gateways over plain HTTP: one connection pool, and the
 * gateways that failed lately, so that a gateway behind a firewall costs one connect timeout a
 * minute rather than one per NAR.
 */
export class PeerGateways {
  // No cap on connections: each CAR stream holds one for a whole NAR, and Nix fetches many at once.
  readonly dispatcher: Dispatcher = new Agent({ connections: null, connect: { timeout: 2_000 } })
  readonly #failed = new ExpiringLru<string, true>(1024)

  usable (base: string): boolean {
    return this.#failed.get(base) === undefined
  }

  failed (base: string): void {
    this.#failed.set(base, true, Date.now() + FAILED_GATEWAY_MS)
  }

  /** Ends every connection, with any response still being read (a paused body would keep close() waiting). */
  async close (): Promise<void> {
    await this.dispatcher.destroy()
  }
}
