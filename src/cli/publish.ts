/**
 * `narswarm publish`: puts store paths into every configured publishing backend and records them
 * in the configured mappers (see src/publish/). Exit status 0 when every path was published or
 * already was, 1 when any failed (each failure printed with its reason), 2 for a usage error.
 */
import { parseArgs } from 'node:util'
import { ConfigError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { openPlugins, type Plugins } from '../registry.ts'
import { openBinaryCache } from '../publish/binary-cache.ts'
import { compileFilter, parseSize } from '../publish/filters.ts'
import { Progress } from '../publish/progress.ts'
import { Publisher, type PublishItem } from '../publish/publisher.ts'
import { fromBinaryCache, fromLocalStore, type Gathered } from '../publish/sources.ts'
import { integer } from '../util/values.ts'
import { loadConfig } from './config.ts'
import { readSignKeys } from './keys.ts'

export const PUBLISH_USAGE = `Usage: narswarm publish [options] [PATHS…]

Publishes store paths (their NARs, checked against their NarHash) into every configured backend
that can publish, and records them with a narinfo signed by --sign-key in the configured mappers.

Which paths:
  PATHS…                    store paths of the local store (or, with --from-cache, of that cache)
  --closure-of PATH         PATH and everything it refers to, references first (repeatable)
  --all                     every valid path of the local store
  --from-cache URL          read narinfos and NARs from this binary cache instead of the local
                            store (https://…?trusted-public-keys=…, or file:///dir, which can
                            also be published whole when no PATHS are given)
  --narinfo-only            with --from-cache: record each narinfo and where its NAR is in the
                            cache, without fetching the NAR
  --include GLOB            only store-path names matching GLOB (repeatable; e.g. 'hello-*')
  --exclude GLOB            leave out store-path names matching GLOB (repeatable)
  --max-size SIZE           leave out NARs larger than SIZE (e.g. 500M, 2G)

How:
  --sign-key FILE           a Nix secret key file; narinfos get its signature (repeatable)
  --jobs N                  paths published at once (default 4)
  --backend SPEC            where NARs go (repeatable; see 'narswarm help')
  --mapper SPEC             where records go (repeatable; default sqlite: in the state directory)
  --trusted-public-keys KEY keys whose signatures are kept (default: the upstreams')
  --config FILE, --state-dir DIR, --log-level LEVEL, --upstream URL   as for 'serve'
`

export async function publishCommand (args: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        'closure-of': { type: 'string', multiple: true },
        all: { type: 'boolean' },
        'from-cache': { type: 'string' },
        'narinfo-only': { type: 'boolean' },
        include: { type: 'string', multiple: true },
        exclude: { type: 'string', multiple: true },
        'max-size': { type: 'string' },
        'sign-key': { type: 'string', multiple: true },
        jobs: { type: 'string' },
        backend: { type: 'string', multiple: true },
        mapper: { type: 'string', multiple: true },
        upstream: { type: 'string', multiple: true },
        'trusted-public-keys': { type: 'string', multiple: true },
        config: { type: 'string' },
        'state-dir': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (err) {
    process.stderr.write(`narswarm publish: ${(err as Error).message}\n\n${PUBLISH_USAGE}`)
    return 2
  }
  const { values: flags, positionals } = parsed
  if (flags.help === true) { process.stdout.write(PUBLISH_USAGE); return 0 }
  const closureOf = flags['closure-of'] ?? []
  const fromCache = flags['from-cache']
  if (flags.all === true && (positionals.length > 0 || closureOf.length > 0 || fromCache !== undefined)) {
    throw new ConfigError('--all publishes the whole local store: give no paths, --closure-of or --from-cache with it')
  }
  if (flags['narinfo-only'] === true && fromCache === undefined) throw new ConfigError('--narinfo-only needs --from-cache (the NARs of the local store must be published)')
  if (flags.all !== true && fromCache === undefined && positionals.length === 0 && closureOf.length === 0) {
    process.stderr.write(`narswarm publish: nothing to publish: name store paths, --closure-of, --all or --from-cache\n\n${PUBLISH_USAGE}`)
    return 2
  }
  const config = loadConfig({
    flags: { config: flags.config, 'state-dir': flags['state-dir'], 'log-level': flags['log-level'], backend: flags.backend, mapper: flags.mapper, upstream: flags.upstream, 'trusted-public-keys': flags['trusted-public-keys'] },
    env: process.env
  })
  const filter = compileFilter({
    include: flags.include ?? [],
    exclude: flags.exclude ?? [],
    ...(flags['max-size'] === undefined ? {} : { maxSize: parseSize(flags['max-size'], '--max-size') })
  })
  const jobs = integer(flags.jobs, 4, '--jobs')
  if (jobs < 1) throw new ConfigError('--jobs must be at least 1')
  // A key that cannot be read stops the run before anything is published: publishing on without
  // the user's signature would leave an index that its readers cannot trust.
  const signKeys = await readSignKeys(flags['sign-key'] ?? [])
  const log = createLogger(config.logLevel, 2, { format: config.logFormat })
  const components = { log, stateDir: config.stateDir }
  let plugins: Plugins | undefined
  let closeSource: (() => Promise<void>) | undefined
  const controller = new AbortController()
  const onSignal = (): void => controller.abort(new Error('interrupted'))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    plugins = await openPlugins(config.mappers, config.backends, components)
    const { mappers, backends } = plugins
    if (flags['narinfo-only'] !== true && !backends.some(b => b.publish !== undefined)) {
      throw new ConfigError(`no backend that can publish is configured (--backend file:///dir, s3://…${backends.length > 0 ? `; ${backends.map(b => b.name).join(', ')} cannot publish` : ''})`)
    }
    if (!mappers.some(m => m.record !== undefined)) throw new ConfigError('no mapper that can record is configured (--mapper sqlite:, folder:///dir)')

    const gathered = await gather(flags, positionals, closureOf, config.trustedPublicKeys, controller.signal)
    closeSource = gathered.close
    const items: PublishItem[] = []
    const excluded: Array<{ path: string, reason: string }> = []
    for (const item of gathered.items) {
      const reason = filter(item.storePath, item.narSize)
      if (reason === undefined) items.push(item)
      else excluded.push({ path: item.storePath, reason })
    }
    const totals = { paths: items.length, bytes: flags['narinfo-only'] === true ? 0 : items.reduce((n, i) => n + i.narSize, 0) }
    const progress = new Progress(totals, { out: process.stderr, summary: process.stdout, log, interactive: process.stderr.isTTY === true })
    progress.excluded.push(...excluded)
    for (const f of gathered.failed) progress.fail(f.path, f.reason)
    log.info({ paths: items.length, excluded: excluded.length, unavailable: gathered.failed.length, backends: backends.map(b => b.name), mappers: mappers.map(m => m.name) }, 'publishing')
    const publisher = new Publisher({
      backends,
      mappers,
      signKeys,
      log,
      events: {
        bytes: n => { progress.bytes += n },
        done: (_, outcome) => { if (outcome === 'published') progress.published++; else progress.skipped++ },
        failed: (path, reason) => progress.fail(path, reason)
      }
    })
    try {
      await publisher.run(items, jobs, controller.signal)
    } finally {
      const summary = progress.finish()
      if (!process.stderr.isTTY) log.info({ published: progress.published, skipped: progress.skipped, excluded: excluded.length, failed: progress.failures.length }, summary.split('\n')[0]!)
    }
    return progress.failures.length > 0 ? 1 : 0
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await plugins?.close()
    await closeSource?.()
  }
}

async function gather (flags: { all?: boolean, 'from-cache'?: string, 'narinfo-only'?: boolean }, positionals: string[], closureOf: string[],
  trustedKeys: string[], signal: AbortSignal): Promise<Gathered & { close?: () => Promise<void> }> {
  const fromCache = flags['from-cache']
  if (fromCache === undefined) {
    const explicit = await fromLocalStore(positionals, { closure: false, all: flags.all === true, trustedKeys, signal })
    if (closureOf.length === 0) return explicit
    const closures = await fromLocalStore(closureOf, { closure: true, all: false, trustedKeys, signal })
    return merge(explicit, closures)
  }
  const cache = openBinaryCache(fromCache, trustedKeys)
  try {
    const options = { narInfoOnly: flags['narinfo-only'] === true, concurrency: 32, signal }
    const closures = closureOf.length === 0 ? undefined : await fromBinaryCache(cache, closureOf, { ...options, closure: true })
    const explicit = positionals.length === 0 && closures !== undefined ? undefined : await fromBinaryCache(cache, positionals, { ...options, closure: false })
    const gathered = closures === undefined ? explicit! : explicit === undefined ? closures : merge(explicit, closures)
    // The NARs are read later through the same client.
    return { ...gathered, close: async () => await cache.close() }
  } catch (err) {
    await cache.close()
    throw err
  }
}

function merge (a: Gathered, b: Gathered): Gathered {
  const seen = new Set(b.items.map(i => i.storePath))
  return { items: [...b.items, ...a.items.filter(i => !seen.has(i.storePath))], failed: [...a.failed, ...b.failed] }
}
