/**
 * IPFS test helpers: a fresh embedded node on 127.0.0.1 with no public defaults, and narswarm's
 * trustless gateway served over plain HTTP in front of an embedded node.
 */
import { createServer } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { silentLogger } from '../../src/log.ts'
import type { EmbeddedIpfsBackend } from '../../src/backend/ipfs/embedded.ts'
import { plugin } from '../../src/backend/ipfs/plugin.ts'
import { answerGatewayRequest, RAW_TYPE } from '../../src/backend/ipfs/trustless-gateway.ts'
import { tempDir } from './temp.ts'

/** An embedded node in a new temp dir (or `stateDir`), listening on a free loopback port; no DHT unless `options` name a routing. */
export async function embeddedNode (options: string = '', stateDir?: string): Promise<EmbeddedIpfsBackend> {
  const dir = stateDir ?? tempDir('narswarm-ipfs-')
  const routing = /(^|&)routing=/.test(options) ? '' : '&routing=none'
  const spec = `ipfs:?listen=/ip4/127.0.0.1/tcp/0${routing}${options === '' ? '' : `&${options}`}`
  return await plugin.create(plugin.parse(new URL(spec)), { log: silentLogger(), stateDir: dir }) as EmbeddedIpfsBackend
}

export interface TestGateway {
  url: string
  requests: string[]
  /** Answers for chosen CIDs instead of the block: a status, or altered bytes. */
  faults: Map<string, { status: number } | { bytes: Uint8Array }>
  /** How CAR requests are answered: served, refused (406), or served with one byte flipped or cut off at a body offset. */
  car: 'serve' | 'refuse' | { flipAt: number } | { cutAt: number }
  close: () => Promise<void>
}

/**
 * narswarm's own trustless gateway answers (trustless-gateway.ts) over plain HTTP, from an
 * embedded node's own store; `faults` replace the answer for chosen CIDs.
 */
export async function startGateway (node: EmbeddedIpfsBackend): Promise<TestGateway> {
  const requests: string[] = []
  const faults: TestGateway['faults'] = new Map()
  const gateway = { car: 'serve' } as TestGateway
  const server = createServer((req, res) => {
    requests.push(req.url ?? '')
    const url = new URL(req.url ?? '/', 'http://gateway')
    const fault = faults.get(/^\/ipfs\/([a-z0-9]+)/.exec(url.pathname)?.[1] ?? '')
    if (fault !== undefined && 'status' in fault) { res.writeHead(fault.status).end(); return }
    if (fault !== undefined) { res.writeHead(200, { 'content-type': RAW_TYPE }).end(fault.bytes); return }
    const car = url.searchParams.get('format') === 'car'
    if (car && gateway.car === 'refuse') { res.writeHead(406).end(); return }
    answerGatewayRequest(req.method ?? 'GET', url, req.headers.accept ?? null, async cid => await node.localBlock(cid)).then(async answer => {
      res.writeHead(answer.status, answer.headers)
      await pipeline(Readable.from(car ? altered(answer.body ?? [], gateway.car) : answer.body ?? []), res)
    }).catch(() => { if (!res.headersSent) res.writeHead(500); res.end() })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return Object.assign(gateway, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    requests,
    faults,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  })
}

/** A CAR body with one byte flipped, or cut off (the connection then ends mid-stream). */
async function * altered (body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, how: TestGateway['car']): AsyncGenerator<Uint8Array> {
  let at = 0
  for await (const chunk of body) {
    const start = at
    at += chunk.length
    if (typeof how === 'object' && 'cutAt' in how && at > how.cutAt) {
      yield chunk.subarray(0, how.cutAt - start)
      throw new Error('cut off')
    }
    if (typeof how === 'object' && 'flipAt' in how && start <= how.flipAt && how.flipAt < at) {
      const copy = Uint8Array.from(chunk)
      copy[how.flipAt - start]! ^= 0xff
      yield copy
      continue
    }
    yield chunk
  }
}
