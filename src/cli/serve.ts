/**
 * `narswarm serve`: wires the configuration into a running substituter and stops it cleanly.
 * `startSubstituter` is also the entry point for embedding narswarm in another program or test.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { DatabaseSync } from 'node:sqlite'
import type { Config } from './config.ts'
import type { Logger } from '../log.ts'
import { STORE_DIR } from '../nix/store-path.ts'
import { createApp } from '../server/app.ts'
import { Substituter } from '../server/substituter.ts'
import { spoolDirOf } from '../server/nar-sources.ts'
import { clearSpoolDir } from '../server/spool.ts'
import { StorageError } from '../errors.ts'
import { LocalChunkStore } from '../chunk/store.ts'
import { loadGroupKey } from '../peer/auth.ts'
import { loadNodeId } from '../peer/node-id.ts'
import { Swarm } from '../peer/swarm.ts'
import { openDatabase, stateDatabase } from '../util/sqlite.ts'
import { NarInfoCache } from '../state/narinfo-cache.ts'
import { storageFailure } from '../state/write-guard.ts'
import { SourceHealth } from '../upstream/health.ts'
import { parseServedNarInfo, Upstream } from '../upstream/upstream.ts'
import { openPlugins } from '../registry.ts'
import { Observer } from '../server/observer.ts'
import { VERSION } from './version.ts'

export interface RunningSubstituter {
  /** Base URL, e.g. http://127.0.0.1:37515 */
  url: string
  /** The peer listener's base URL; undefined when it is off or the store is unusable. */
  peerUrl?: string
  close: () => Promise<void>
}

/**
 * `observer` collects metrics and recent activity for `/metrics` and the status page; give the one
 * whose `logTap` the logger feeds, so logged failures show there too.
 */
export async function startSubstituter (config: Config, log: Logger, observer = new Observer()): Promise<RunningSubstituter> {
  const opened: Array<() => unknown> = []
  try {
    return await start(config, log, observer, opened)
  } catch (err) {
    // A start that fails part-way closes again what it opened, in reverse order.
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => {})
    throw err
  }
}

/** Starts the substituter; `opened` gets a closer for each thing opened, until it is running. */
async function start (config: Config, log: Logger, observer: Observer, opened: Array<() => unknown>): Promise<RunningSubstituter> {
  const db = openStateDatabase(stateDatabase(config.stateDir), log)
  opened.push(() => db.close())
  const cache = new NarInfoCache(db, {
    positiveTtl: config.narinfoPositiveTtl,
    negativeTtl: config.narinfoNegativeTtl,
    log,
    // Rows stored before a rule existed are held to it too.
    check: (hashPart, text) => { const served = parseServedNarInfo(text, hashPart); return served.kind === 'rejected' ? served.reason : undefined }
  })
  cache.purgeExpired()
  const purge = setInterval(() => cache.purgeExpired(), 3_600_000).unref()
  opened.push(() => clearInterval(purge))
  const upstreams = config.upstreams.map(u => new Upstream(u))
  opened.push(async () => await Promise.all(upstreams.map(u => u.close())))
  const plugins = await openPlugins(config.mappers, config.backends, { log, stateDir: config.stateDir })
  opened.push(async () => await plugins.close())
  const { mappers, backends } = plugins
  const store = await openStore(db, config, log)
  opened.push(async () => await store?.close())
  // Peers exchange chunks: without a store this node neither serves nor fetches from them.
  const swarm = store === undefined
    ? undefined
    : new Swarm({
      store, cache, log, nodeId: loadNodeId(config.stateDir),
      trustedKeys: [...new Set([...config.trustedPublicKeys, ...config.upstreams.flatMap(u => u.trustedPublicKeys)])],
      staticPeers: config.peers, listen: config.peerListen, groupKey: loadGroupKey(config.peerKey, config.peerKeyFile),
      uploadLimit: config.peerUploadLimit, maxRequests: config.peerMaxRequests, limits: config.limits,
      discovery: config.discovery, discoveryInterval: config.discoveryInterval, backends, mapper: mappers[0]
    })
  const spoolDir = spoolDirOf(config.stateDir)
  await clearSpoolDir(spoolDir).catch((err: unknown) => {
    log.warn({ err: (err as Error).message }, 'spool directory unusable: NARs are relayed without sharing or caching until it works')
  })
  const health = new SourceHealth({ cooldown: config.badSourceCooldown })
  if (store !== undefined) {
    observer.storeSummary = () => {
      const s = store.stats()
      return { nars: s.nars, chunks: s.chunks, logicalBytes: s.logicalBytes, storedBytes: s.storedBytes, capacityBytes: s.capacity }
    }
  }
  if (swarm !== undefined) {
    const peers = swarm
    observer.peerSummary = () => peers.status().peers.map(p => ({
      url: p.url, origin: p.origin, score: p.score, healthy: p.coolingUntil <= Date.now(), bytesReceived: p.served.bytes,
      ...(p.nodeId === undefined ? {} : { id: p.nodeId })
    }))
  }
  const substituter = new Substituter({
    upstreams,
    cache,
    health,
    observer,
    log,
    mappers,
    backends,
    indexKeys: config.trustedPublicKeys,
    hedgeDelay: config.hedgeDelay,
    firstByteTimeout: config.firstByteTimeout,
    untrustedBudget: config.untrustedBudget,
    spoolDir,
    ...(store === undefined ? {} : { store }),
    ...(swarm === undefined ? {} : { fillers: [swarm.filler], narInfoFallback: swarm.narInfoFallback })
  })
  const server = createApp({
    substituter, log, priority: config.priority, storeDir: STORE_DIR, index: mappers[0], indexApi: config.indexApi, limits: config.limits,
    observer, version: VERSION, upstreams: () => upstreams.map(u => ({ name: u.name, onProbation: health.onProbation(u.name) })),
    ...(swarm === undefined ? {} : { peers: () => swarm.status() })
  })
  server.listen(config.listen.port, config.listen.host)
  opened.push(() => server.close())
  await once(server, 'listening')
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  opened.push(async () => await swarm?.close())
  await swarm?.start()
  const peerUrl = swarm?.status().listener ?? undefined
  log.info({ url, peerUrl, stateDir: config.stateDir, upstreams: upstreams.map(u => u.name), mappers: mappers.map(m => m.name), backends: backends.map(b => b.name) }, 'narswarm substituter listening')

  let closing: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closing ??= (async () => {
      clearInterval(purge)
      await swarm?.close()
      const closed = new Promise<void>(resolve => server.close(() => resolve()))
      server.closeIdleConnections()
      // In-flight NAR transfers get a grace period to finish; then they are cut.
      const grace = setTimeout(() => { substituter.abortFetches(); server.closeAllConnections() }, config.shutdownGrace).unref()
      await closed
      clearTimeout(grace)
      substituter.abortFetches()
      await Promise.all(upstreams.map(u => u.close()))
      await plugins.close()
      await store?.close()
      db.close()
      log.info('narswarm substituter stopped')
    })()
    return await closing
  }
  return { url, ...(peerUrl === undefined ? {} : { peerUrl }), close }
}

/**
 * The chunk store in the state directory. A store made by another chunker refuses to start
 * (ConfigError); one whose directory cannot be written leaves narswarm serving without caching.
 */
async function openStore (db: DatabaseSync, config: Config, log: Logger): Promise<LocalChunkStore | undefined> {
  try {
    return await LocalChunkStore.open({ db, dir: config.stateDir, capacity: config.cacheSize, log })
  } catch (err) {
    if (!(err instanceof StorageError)) throw err
    log.warn({ err: err.message }, 'chunk store unusable: NARs are served without caching')
    return undefined
  }
}

/**
 * The state database; where the state directory cannot hold it (read-only, full, failing, not
 * creatable), one in memory, so that narswarm still serves: its state only saves work.
 */
function openStateDatabase (file: string, log: Logger): DatabaseSync {
  try {
    return openDatabase(file)
  } catch (err) {
    log.warn({ file, err: (storageFailure(err) ?? err as Error).message }, 'state database unusable; narinfos are kept in memory only until restart')
    return openDatabase(':memory:')
  }
}
