/**
 * `narswarm serve`: wires the configuration into a running substituter and stops it cleanly.
 * `startSubstituter` is also the entry point for embedding narswarm in another program or test.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { Config } from './config.ts'
import type { Logger } from '../log.ts'
import { STORE_DIR } from '../nix/store-path.ts'
import { createApp } from '../server/app.ts'
import { Substituter } from '../server/substituter.ts'
import { openDatabase } from '../util/sqlite.ts'
import { NarInfoCache } from '../state/narinfo-cache.ts'
import { SourceHealth } from '../upstream/health.ts'
import { Upstream } from '../upstream/upstream.ts'
import { openPlugins, type Plugins } from '../registry.ts'
import { Observer } from '../server/observer.ts'
import { VERSION } from './version.ts'

export interface RunningSubstituter {
  /** Base URL, e.g. http://127.0.0.1:37515 */
  url: string
  close: () => Promise<void>
}

/**
 * `observer` collects metrics and recent activity for `/metrics` and the status page; give the one
 * whose `logTap` the logger feeds, so logged failures show there too.
 */
export async function startSubstituter (config: Config, log: Logger, observer = new Observer()): Promise<RunningSubstituter> {
  const db = openDatabase(join(config.stateDir, 'narswarm.sqlite'))
  const cache = new NarInfoCache(db, { positiveTtl: config.narinfoPositiveTtl, negativeTtl: config.narinfoNegativeTtl })
  cache.purgeExpired()
  const purge = setInterval(() => cache.purgeExpired(), 3_600_000).unref()
  const upstreams = config.upstreams.map(u => new Upstream(u))
  const components = { log, stateDir: config.stateDir }
  let plugins: Plugins
  try {
    plugins = await openPlugins(config.mappers, config.backends, components)
  } catch (err) {
    db.close()
    throw err
  }
  const { mappers, backends } = plugins
  const health = new SourceHealth({ cooldown: config.badSourceCooldown })
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
    firstByteTimeout: config.firstByteTimeout
  })
  const server = createApp({
    substituter, log, priority: config.priority, storeDir: STORE_DIR, index: mappers[0], observer, version: VERSION,
    upstreams: () => upstreams.map(u => ({ name: u.name, onProbation: health.onProbation(u.name) }))
  })
  server.listen(config.listen.port, config.listen.host)
  try {
    await once(server, 'listening')
  } catch (err) {
    db.close()
    throw err
  }
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host}:${address.port}`
  log.info({ url, stateDir: config.stateDir, upstreams: upstreams.map(u => u.name), mappers: mappers.map(m => m.name), backends: backends.map(b => b.name) }, 'narswarm substituter listening')

  let closing: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closing ??= (async () => {
      clearInterval(purge)
      const closed = new Promise<void>(resolve => server.close(() => resolve()))
      server.closeIdleConnections()
      // In-flight NAR transfers get a grace period to finish; then they are cut.
      const grace = setTimeout(() => server.closeAllConnections(), config.shutdownGrace).unref()
      await closed
      clearTimeout(grace)
      await Promise.all(upstreams.map(u => u.close()))
      await plugins.close()
      db.close()
      log.info('narswarm substituter stopped')
    })()
    return await closing
  }
  return { url, close }
}
