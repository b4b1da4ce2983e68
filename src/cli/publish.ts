/**
 * `narswarm publish`: puts store paths into every configured publishing backend and records them
 * in the configured mappers (see src/publish/). The paths stream from their source through the
 * filters into the publisher, so memory stays flat in their number; progress shows from the start,
 * the listing included. Exit status 0 when every path was published or already was, 1 when any
 * failed (each failure printed with its reason) — a path whose record no reader would trust
 * included — and 2 for a usage error.
 */
import { ConfigError, UsageError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { openPlugins, type Plugins } from '../registry.ts'
import { openBinaryCache } from '../publish/binary-cache.ts'
import { CacheWalk } from '../publish/cache-walk.ts'
import { compileFilter, parseSize } from '../publish/filters.ts'
import { Progress } from '../publish/progress.ts'
import { Publisher, type PublishItem } from '../publish/publisher.ts'
import { fromBinaryCache, fromLocalStore, hashPartOf, type Gathered } from '../publish/sources.ts'
import { batchHeap, detached, relieveHeap } from '../util/heap.ts'
import { integer } from '../util/values.ts'
import { list, parseCommandLine, str, type OptionTable, type Values } from './args.ts'
import { loadConfig, settingFlags, settingOptions } from './config.ts'
import { readSignKeys } from './keys.ts'
import { PATHS_FROM_OPTION, readPathList } from './paths.ts'

export const PUBLISH_DESCRIPTION = 'Publishes store paths (their NARs, checked against their NarHash) into every configured backend that can publish, and records them with a narinfo signed by --sign-key in the configured mappers.'

const WHICH = 'Which paths'
const HOW = 'How'
const SETTINGS_USED = ['config', 'state-dir', 'log-level', 'upstream', 'backend', 'mapper', 'trusted-public-keys'] as const
const shared = settingOptions(SETTINGS_USED)

export const PUBLISH_OPTIONS: OptionTable = {
  'paths-from': { ...PATHS_FROM_OPTION, group: WHICH },
  'closure-of': { type: 'string', multiple: true, value: 'PATH', help: 'PATH and everything it refers to, references first', group: WHICH },
  all: { type: 'boolean', help: 'every valid path of the local store', group: WHICH },
  'from-cache': { type: 'string', value: 'URL', help: 'read narinfos and NARs from this binary cache instead of the local store (https://…?trusted-public-keys=…, or file:///dir, which is published whole when no paths are named); its key on the URL counts as trusted for its narinfos', group: WHICH },
  'narinfo-only': { type: 'boolean', help: 'with --from-cache: record each narinfo and where its NAR is in the cache, without fetching the NAR', group: WHICH },
  include: { type: 'string', multiple: true, value: 'GLOB', help: "only store-path names matching GLOB (e.g. 'hello-*')", group: WHICH },
  exclude: { type: 'string', multiple: true, value: 'GLOB', help: 'leave out store-path names matching GLOB', group: WHICH },
  'max-size': { type: 'string', value: 'SIZE', help: 'leave out NARs larger than SIZE (e.g. 500M, 2G)', group: WHICH },
  'sign-key': { type: 'string', multiple: true, value: 'FILE', help: 'a Nix secret key file; narinfos get its signature', group: HOW },
  jobs: { type: 'string', value: 'N', help: 'paths published at once', default: '4', group: HOW },
  ...Object.fromEntries(Object.entries(shared).map(([k, o]) => [k, { ...o, group: HOW }])),
  backend: { ...shared.backend!, help: "where NARs go (see 'narswarm help')", group: HOW },
  mapper: { ...shared.mapper!, help: 'where records go', default: 'sqlite: in the state directory', group: HOW },
  'trusted-public-keys': { ...shared['trusted-public-keys']!, help: 'keys whose signatures are kept, and that readers of the index trust', group: HOW }
}

export async function publishCommand (argv: string[]): Promise<number> {
  batchHeap()
  const { values, positionals } = parseCommandLine('publish', argv, PUBLISH_OPTIONS, Infinity)
  const closureOf = list(values, 'closure-of')
  const pathsFrom = list(values, 'paths-from')
  const fromCache = str(values, 'from-cache')
  const named = positionals.length > 0 || pathsFrom.length > 0
  if (values.all === true && (named || closureOf.length > 0 || fromCache !== undefined)) {
    throw new UsageError('publish: --all publishes the whole local store: give no paths, --paths-from, --closure-of or --from-cache with it')
  }
  if (values['narinfo-only'] === true && fromCache === undefined) throw new UsageError('publish: --narinfo-only needs --from-cache (the NARs of the local store must be published)')
  if (values.all !== true && fromCache === undefined && !named && closureOf.length === 0) {
    throw new UsageError('publish: nothing to publish: name store paths, --paths-from, --closure-of, --all or --from-cache')
  }
  if (pathsFrom.filter(f => f === '-').length > 1) throw new UsageError('publish: standard input can be read once: one --paths-from -')
  const config = loadConfig({ flags: settingFlags(values, SETTINGS_USED), env: process.env })
  const maxSize = str(values, 'max-size')
  const filter = compileFilter({ include: list(values, 'include'), exclude: list(values, 'exclude'), ...(maxSize === undefined ? {} : { maxSize: parseSize(maxSize, '--max-size') }) })
  const jobs = integer(values.jobs, 4, '--jobs')
  if (jobs < 1) throw new ConfigError('--jobs must be at least 1')
  // A key that cannot be read stops the run before anything is published: publishing on without
  // the user's signature would leave an index that its readers cannot trust.
  const signKeys = await readSignKeys(list(values, 'sign-key'))
  const narInfoOnly = values['narinfo-only'] === true
  const log = createLogger(config.logLevel, 2, { format: config.logFormat })
  const progress = new Progress({ paths: 0, bytes: 0 }, { out: process.stderr, summary: process.stdout, log, interactive: process.stderr.isTTY === true })
  progress.listed = 0
  let plugins: Plugins | undefined
  let closeSource: (() => Promise<void>) | undefined
  const controller = new AbortController()
  const onSignal = (): void => controller.abort(new DOMException('interrupted', 'AbortError'))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let untrusted = 0
  try {
    plugins = await openPlugins(config.mappers, config.backends, { log, stateDir: config.stateDir })
    const { mappers, backends } = plugins
    if (!narInfoOnly && !backends.some(b => b.publish !== undefined)) {
      throw new ConfigError(`no backend that can publish is configured (--backend file:///dir, s3://…${backends.length > 0 ? `; ${backends.map(b => b.name).join(', ')} cannot publish` : ''})`)
    }
    if (!mappers.some(m => m.record !== undefined)) throw new ConfigError('no mapper that can record is configured (--mapper sqlite:, folder:///dir)')

    const paths = await readPathList(positionals, pathsFrom)
    progress.listed = paths.length + closureOf.length
    const source = await gather({ values, paths, closureOf, trustedKeys: config.trustedPublicKeys, narInfoOnly, progress, signal: controller.signal })
    closeSource = source.close
    log.info({ backends: backends.map(b => b.name), mappers: mappers.map(m => m.name) }, 'publishing')
    const seen = new Set<string>()
    let handed = 0
    const items = async function * (): AsyncGenerator<PublishItem> {
      for await (const entry of source.entries) {
        progress.listed = undefined
        if ('failed' in entry) { progress.fail(entry.failed.path, entry.failed.reason); continue }
        const item = entry.item
        // A cache walk hands on each path once; the local store's closures and named paths overlap.
        if (source.overlapping) {
          if (seen.has(item.storePath)) continue
          seen.add(detached(item.storePath))
        }
        progress.totals.paths = Math.max(progress.totals.paths, ++handed)
        if (handed % 1000 === 0) relieveHeap()
        if (filter(item.storePath, item.narSize) !== undefined) { progress.excluded++; continue }
        // Recorded with no signature that a reader checks against trusted-public-keys (or the
        // cache's key on the URL, or a --sign-key), a narinfo would be refused by every reader.
        if (item.sigs.length === 0 && (item.existing !== undefined || signKeys.length === 0)) {
          untrusted++
          progress.fail(item.storePath, 'not recorded: no signature by a key its readers trust (trusted-public-keys, the key on the --from-cache URL, or a --sign-key)')
          continue
        }
        if (!narInfoOnly) progress.totals.bytes += item.narSize
        yield item
      }
      progress.listed = undefined
    }
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
      await publisher.run(items(), jobs, controller.signal)
    } finally {
      const summary = progress.finish()
      if (!process.stderr.isTTY) log.info({ published: progress.published, skipped: progress.skipped, excluded: progress.excluded, failed: progress.failures.length }, summary.split('\n')[0]!)
      if (untrusted > 0) {
        process.stderr.write(`narswarm publish: warning: ${untrusted} path${untrusted === 1 ? '' : 's'} not recorded: no signature by a key the index's readers trust. ` +
          'Sign with --sign-key, or name the key that signed them (?trusted-public-keys= on the --from-cache URL, or --trusted-public-keys).\n')
      }
    }
    return progress.failures.length > 0 ? 1 : 0
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await plugins?.close()
    await closeSource?.()
  }
}

interface GatherInput {
  values: Values
  paths: string[]
  closureOf: string[]
  trustedKeys: string[]
  narInfoOnly: boolean
  progress: Progress
  signal: AbortSignal
}

/** The paths to publish, as a stream: from the local store, or walked through a binary cache. */
async function gather (input: GatherInput): Promise<{ entries: AsyncIterable<Gathered>, overlapping: boolean, close?: () => Promise<void> }> {
  const { values, paths, closureOf, trustedKeys, signal } = input
  const fromCache = str(values, 'from-cache')
  if (fromCache === undefined) {
    const entries = async function * (): AsyncGenerator<Gathered> {
      if (closureOf.length > 0) yield * fromLocalStore(closureOf, { closure: true, all: false, trustedKeys, signal })
      if (paths.length > 0 || values.all === true) yield * fromLocalStore(paths, { closure: false, all: values.all === true, trustedKeys, signal })
    }
    return { entries: entries(), overlapping: true }
  }
  const cache = openBinaryCache(fromCache, trustedKeys)
  try {
    const failed: Gathered[] = []
    const hashParts = (list: string[]): string[] => {
      const out = new Set<string>()
      for (const p of list) {
        try { out.add(hashPartOf(p)) } catch (err) { failed.push({ failed: { path: p, reason: (err as Error).message } }) }
      }
      return [...out]
    }
    const closureRoots = hashParts(closureOf)
    let roots = hashParts(paths)
    if (roots.length === 0 && closureRoots.length === 0 && failed.length === 0) {
      if (cache.list === undefined) throw new UsageError('publish: an HTTP binary cache cannot be listed: name the store paths to publish from it (or --paths-from FILE)')
      const listed: string[] = []
      for await (const h of cache.list()) { listed.push(h); input.progress.listed = listed.length }
      roots = listed
    }
    input.progress.totals.paths = roots.length + closureRoots.length
    const walk = new CacheWalk(cache.name, async (h, s) => await cache.narInfo(h, s))
    const options = { narInfoOnly: input.narInfoOnly, concurrency: 32, signal }
    const entries = async function * (): AsyncGenerator<Gathered> {
      yield * failed
      if (closureRoots.length > 0) yield * fromBinaryCache(cache, walk, closureRoots, true, options)
      if (roots.length > 0) yield * fromBinaryCache(cache, walk, roots, false, options)
    }
    // The NARs are read later through the same client.
    return { entries: entries(), overlapping: false, close: async () => await cache.close() }
  } catch (err) {
    await cache.close()
    throw err
  }
}
