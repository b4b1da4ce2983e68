/**
 * IPFS test helpers: a fresh embedded node on 127.0.0.1 with no public defaults, and a small
 * trustless gateway (raw blocks) in front of an embedded node.
 */
import { createServer } from 'node:http'
import { once } from 'node:events'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { CID } from 'multiformats/cid'
import { silentLogger } from '../../src/log.ts'
import type { EmbeddedIpfsBackend } from '../../src/backend/ipfs/embedded.ts'
import { plugin } from '../../src/backend/ipfs/plugin.ts'

/** An embedded node in a new temp dir (or `stateDir`), listening on a free loopback port. */
export async function embeddedNode (options: string = '', stateDir?: string): Promise<EmbeddedIpfsBackend> {
  const dir = stateDir ?? await mkdtemp(join(tmpdir(), 'narswarm-ipfs-'))
  const spec = `ipfs:?listen=/ip4/127.0.0.1/tcp/0&routing=none${options === '' ? '' : `&${options}`}`
  return await plugin.create(plugin.parse(new URL(spec)), { log: silentLogger(), stateDir: dir }) as EmbeddedIpfsBackend
}

export interface TestGateway {
  url: string
  requests: string[]
  /** Answers for chosen CIDs instead of the block: a status, or altered bytes. */
  faults: Map<string, { status: number } | { bytes: Uint8Array }>
  close: () => Promise<void>
}

/** A trustless gateway serving `GET /ipfs/<cid>?format=raw` from an embedded node's own store. */
export async function startGateway (node: EmbeddedIpfsBackend): Promise<TestGateway> {
  const requests: string[] = []
  const faults: TestGateway['faults'] = new Map()
  const server = createServer((req, res) => {
    requests.push(req.url ?? '')
    const m = /^\/ipfs\/([a-z0-9]+)\?format=raw$/.exec(req.url ?? '')
    if (m === null || req.headers.accept !== 'application/vnd.ipld.raw') { res.writeHead(400).end(); return }
    const fault = faults.get(m[1]!)
    if (fault !== undefined && 'status' in fault) { res.writeHead(fault.status).end(); return }
    if (fault !== undefined) { res.writeHead(200, { 'content-type': 'application/vnd.ipld.raw' }).end(fault.bytes); return }
    node.localBlock(CID.parse(m[1]!)).then(block => {
      if (block === undefined) res.writeHead(404).end()
      else res.writeHead(200, { 'content-type': 'application/vnd.ipld.raw', 'content-length': block.length }).end(block)
    }, () => res.writeHead(500).end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    requests,
    faults,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}
