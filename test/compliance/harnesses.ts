/**
 * How to run the Mapper and Backend compliance suites against each registered scheme: per scheme,
 * the suites (a label and a harness) and what they need around them (a server, a tracker, a node),
 * started by `start` and stopped by `stop`. `all.test.ts` runs them all and fails for a scheme of
 * `src/registry.ts` with no entry here. Tests of one implementation's own behaviour stay in
 * test/mapper/ and test/backend/.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { silentLogger } from '../../src/log.ts'
import { handleIndexRequest } from '../../src/server/index-api.ts'
import type { Backend, Mapper } from '../../src/types.ts'
import { sha256Hex, upload } from '../helpers/bytes.ts'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { tempDir } from '../helpers/temp.ts'
import type { BackendHarness } from './backend.ts'
import type { MapperHarness } from './mapper.ts'

export interface Suites<H> {
  suites: Array<{ label: string, harness: H }>
  /** Stops what the harnesses needed (servers, nodes, temporary directories). */
  stop?: () => Promise<void>
}

const components = (stateDir = tmpdir()): { log: ReturnType<typeof silentLogger>, stateDir: string } => ({ log: silentLogger(), stateDir })
const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
/** A CID in the ipfs scheme that cannot name a file (dag-cbor): the backend knows it holds no NAR. */
const notAFile = async (): Promise<string> => `ipfs://${CID.create(1, 0x71, await sha256.digest(new Uint8Array([1, 2, 3]))).toString()}`

export const MAPPER_HARNESSES: Record<string, () => Promise<Suites<MapperHarness>>> = {
  async sqlite () {
    const { plugin } = await import('../../src/mapper/sqlite.ts')
    return { suites: [{ label: 'sqlite', harness: { setup: async () => await plugin.create(plugin.parse(new URL('sqlite:')), components(tempDir())) } }] }
  },

  async folder () {
    const { plugin } = await import('../../src/mapper/folder.ts')
    return { suites: [{ label: 'folder', harness: { setup: async () => await plugin.create(plugin.parse(new URL(`folder://${tempDir()}`)), components()) } }] }
  },

  async exec () {
    const { plugin } = await import('../../src/mapper/exec.ts')
    const spec = (): string => {
      const args = ['--disable-warning=ExperimentalWarning', fixture('exec-mapper.ts'), `--db=${join(tempDir(), 'db.json')}`]
      return `exec://${process.execPath}?${args.map(a => `arg=${encodeURIComponent(a)}`).join('&')}`
    }
    return { suites: [{ label: 'exec (fixture program)', harness: { setup: async () => await plugin.create(plugin.parse(new URL(spec())), components()) } }] }
  },

  async http () {
    const { plugin } = await import('../../src/mapper/http.ts')
    const sqlite = (await import('../../src/mapper/sqlite.ts')).plugin
    const { createServer } = await import('node:http')
    let backing: Mapper
    let server: import('node:http').Server
    return {
      suites: [{
        label: 'http+http (over a sqlite index served by index-api)',
        harness: {
          writable: false,
          setup: async () => {
            backing = await sqlite.create(sqlite.parse(new URL('sqlite:')), components(tempDir()))
            server = createServer((req, res) => {
              handleIndexRequest(req.url ?? '/', backing, res).then(handled => { if (!handled) res.writeHead(418).end() }, () => res.destroy())
            })
            await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
            const { port } = server.address() as import('node:net').AddressInfo
            return await plugin.create(plugin.parse(new URL(`http+http://127.0.0.1:${port}/`)), components())
          },
          teardown: async () => {
            await new Promise(resolve => { server.close(resolve); server.closeAllConnections() })
            await backing.close!()
          },
          seed: async (narHash, locator, options) => { await backing.record!(narHash, locator, options) }
        }
      }]
    }
  }
}

export const BACKEND_HARNESSES: Record<string, () => Promise<Suites<BackendHarness>>> = {
  async file () {
    const { plugin } = await import('../../src/backend/file.ts')
    const dirs = new Map<Backend, string>()
    const fresh = async (compression: string): Promise<Backend> => {
      const dir = await mkdtemp(join(tmpdir(), 'file-backend-'))
      const backend = await plugin.create(plugin.parse(new URL(`${pathToFileURL(dir).href}?compression=${compression}`)), components())
      dirs.set(backend, dir)
      return backend
    }
    const suite = (label: string, compression: string, ext: string): { label: string, harness: BackendHarness } => ({
      label,
      harness: {
        publishes: true,
        setup: async () => await fresh(compression),
        teardown: async backend => { await rm(dirs.get(backend)!, { recursive: true, force: true }) },
        missing: backend => ({ url: `${pathToFileURL(dirs.get(backend)!).href}/nar/absent.nar${ext}`, compression })
      }
    })
    return { suites: [suite('file (compression=none)', 'none', ''), suite('file (default compression, zstd)', 'zstd', '.zst')] }
  },

  async mirror () {
    const { plugin } = await import('../../src/backend/mirror.ts')
    let sites: Array<{ dir: string, server: CacheServer }> = []
    return {
      suites: [{
        label: 'mirror (two live mirrors)',
        harness: {
          publishes: false,
          setup: async () => {
            sites = []
            for (let i = 0; i < 2; i++) {
              const dir = await mkdtemp(join(tmpdir(), 'mirror-'))
              await mkdir(join(dir, 'nar'))
              sites.push({ dir, server: await startCacheServer(dir) })
            }
            return await plugin.create(plugin.parse(new URL(`mirror+${sites[0]!.server.url}/,${sites[1]!.server.url}/`)), components())
          },
          teardown: async () => {
            for (const s of sites) { await s.server.close(); await rm(s.dir, { recursive: true, force: true }) }
          },
          seed: async (_backend, bytes) => {
            const path = `nar/${sha256Hex(bytes)}.nar`
            for (const site of sites) await writeFile(join(site.dir, path), bytes)
            return { url: `${sites[0]!.server.url}/${path}`, compression: 'none', fileSize: bytes.length }
          },
          missing: () => ({ url: `${sites[0]!.server.url}/nar/absent.nar`, compression: 'none' })
        }
      }]
    }
  },

  async s3 () {
    const { plugin } = await import('../../src/backend/s3.ts')
    const { startS3Server } = await import('../helpers/s3-server.ts')
    const bucket = 'narswarm-compliance'
    const s3 = await startS3Server(bucket)
    const dir = await mkdtemp(join(tmpdir(), 'narswarm-s3-state-'))
    return {
      suites: [{
        label: 's3',
        harness: {
          skip: s3.skip,
          publishes: true,
          setup: async () => await plugin.create(plugin.parse(new URL(`s3://${bucket}/cache?endpoint=${s3.endpoint}&force-path-style=true`)), components(dir)),
          missing: () => ({ url: `s3://${bucket}/cache/nar/nothing-here.nar.zst`, compression: 'zstd' })
        }
      }],
      stop: async () => { await s3.close(); await rm(dir, { recursive: true, force: true }) }
    }
  },

  async exec () {
    const { plugin } = await import('../../src/backend/exec.ts')
    const store = await mkdtemp(join(tmpdir(), 'exec-store-'))
    const spec = new URL(`exec://${process.execPath}`)
    spec.searchParams.append('arg', '--disable-warning=ExperimentalWarning')
    spec.searchParams.append('arg', fixture('exec-fetcher.ts'))
    return {
      suites: [{
        label: 'exec (fixture fetcher)',
        harness: {
          publishes: false,
          setup: async () => await plugin.create(plugin.parse(spec), components()),
          seed: async (_backend, bytes) => {
            const path = join(store, `${sha256Hex(bytes)}.nar`)
            await writeFile(path, bytes)
            return { url: `exec://${path}`, compression: 'none' }
          },
          missing: () => ({ url: `exec://${join(store, 'absent.nar')}`, compression: 'none' })
        }
      }],
      stop: async () => { await rm(store, { recursive: true, force: true }) }
    }
  },

  async ipfs () {
    const { plugin } = await import('../../src/backend/ipfs/plugin.ts')
    const { embeddedNode, startGateway } = await import('../helpers/ipfs.ts')
    const missing = { url: await notAFile(), compression: 'none' as const }
    const dir = await mkdtemp(join(tmpdir(), 'narswarm-ipfs-compliance-'))
    const open = async (spec: string): Promise<Backend> => await plugin.create(plugin.parse(new URL(spec)), components(dir))
    // A gateway over an embedded node, for the trustless-gateway client.
    const node = await embeddedNode('', join(dir, 'node'))
    const gateway = await startGateway(node)
    const kuboApi = process.env.TEST_KUBO_API
    const kuboSkip = kuboApi === undefined || kuboApi === '' ? 'no kubo daemon: set TEST_KUBO_API=http://127.0.0.1:5001 to run the ipfs+http compliance suite against one' : false
    return {
      suites: [
        { label: 'ipfs: (embedded node)', harness: { publishes: true, setup: async () => await embeddedNode('', tempDir()), missing: () => missing } },
        {
          label: 'ipfs+gateway+http: (a gateway over an embedded node)',
          harness: { publishes: false, setup: async () => await open(`ipfs+gateway+${gateway.url}`), seed: async (_backend, bytes) => await node.publish(upload(bytes)), missing: () => missing }
        },
        { label: 'ipfs+http: (a real kubo daemon)', harness: { skip: kuboSkip, publishes: true, setup: async () => await open(`ipfs+${kuboApi ?? ''}`), missing: () => missing } }
      ],
      stop: async () => { await gateway.close(); await node.close(); await rm(dir, { recursive: true, force: true }) }
    }
  },

  async torrent () {
    const { plugin } = await import('../../src/backend/torrent/index.ts')
    const { loopbackTorrentSpec, startTrackerOrSkip } = await import('../helpers/torrent-tracker.ts')
    const root = await mkdtemp(join(tmpdir(), 'narswarm-torrent-compliance-'))
    const { tracker, skip } = await startTrackerOrSkip()
    let n = 0
    return {
      suites: [{
        label: 'torrent',
        harness: {
          skip,
          publishes: true,
          setup: async () => await plugin.create(plugin.parse(new URL(loopbackTorrentSpec(tracker))), components(join(root, `node-${n++}`))),
          // A magnet link that names no BitTorrent content (a Tiger Tree hash): not this backend's.
          missing: () => ({ url: 'magnet:?xt=urn:tree:tiger:7N5OAMRNGMSSEUE3ORHOKWN4WWIQ5X4EBOOTLJY', compression: 'none' })
        }
      }],
      stop: async () => { await tracker?.close(); await rm(root, { recursive: true, force: true }) }
    }
  }
}
