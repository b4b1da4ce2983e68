/**
 * IPFS test helpers: a fresh embedded node on 127.0.0.1 with no public defaults, a small trustless
 * gateway (raw blocks) in front of an embedded node, and `publishCache`, which publishes every NAR
 * of a Nix binary cache directory into a backend and records the locator (with the signed
 * narinfo) in a mapper: what a `narswarm publish` does, through the plug-in API.
 */
import { createServer } from 'node:http'
import { once } from 'node:events'
import { createReadStream } from 'node:fs'
import { mkdtemp, readdir, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { CID } from 'multiformats/cid'
import { silentLogger } from '../../src/log.ts'
import { decompress } from '../../src/nix/compression.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import type { EmbeddedIpfsBackend } from '../../src/backend/ipfs/embedded.ts'
import { plugin } from '../../src/backend/ipfs/plugin.ts'
import type { Backend, Mapper } from '../../src/types.ts'

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

/**
 * Publishes every NAR of the binary cache in `dir` (as `nix copy --to file://` wrote it) into
 * `backend` and records it in `mapper` with its signed narinfo. Returns the narinfos and locators.
 */
export async function publishCache (dir: string, backend: Backend, mapper: Mapper): Promise<Array<{ narInfo: NarInfo, url: string }>> {
  const out: Array<{ narInfo: NarInfo, url: string }> = []
  for (const name of (await readdir(dir)).filter(n => n.endsWith('.narinfo')).sort()) {
    const narInfo = NarInfo.parse(await readFile(join(dir, name), 'utf8'))
    const body = decompress(narInfo.compression, createReadStream(join(dir, narInfo.url)) as AsyncIterable<Uint8Array>)
    const locator = await backend.publish!({ narHash: narInfo.narHash, narSize: narInfo.narSize, body })
    await mapper.record!(narInfo.narHash, locator, { narInfo: narInfo.toString() })
    out.push({ narInfo, url: locator.url })
  }
  return out
}
