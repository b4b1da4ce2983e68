/**
 * `narswarm cache`: the chunk store seen from the command line (docs/chunk-store.md) — how full it
 * is, re-hashing every chunk, collecting garbage, pinning paths, pre-seeding it from a binary cache
 * or the local Nix store, and emptying it. Works on the state directory of the configuration, also
 * while `narswarm serve` runs (except `clear`).
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError, UsageError } from '../errors.ts'
import { importFromCache, importFromLocalStore, type ImportReport } from '../chunk/import.ts'
import { clearChunkStore, LocalChunkStore } from '../chunk/store.ts'
import { NixHash } from '../nix/hash.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { parseStorePath, STORE_DIR } from '../nix/store-path.ts'
import { queryPathInfos, storePathOf } from '../publish/path-info.ts'
import { NarInfoCache } from '../state/narinfo-cache.ts'
import { formatBytes } from '../util/bytes.ts'
import { openDatabase, stateDatabase } from '../util/sqlite.ts'
import { loadConfig, settingFlags, settingOptions, type Config } from './config.ts'
import { didYouMean, list, parseCommandLine, type OptionTable } from './args.ts'
import { PATHS_FROM_OPTION, readPathList } from './paths.ts'
import type { Subcommand } from './commands.ts'

const COMMON = settingOptions(['config', 'state-dir', 'cache-size'])
const PATHS: OptionTable = { closure: { type: 'boolean', help: "the paths' closures too" }, 'paths-from': PATHS_FROM_OPTION }

/** The subcommands, their summaries and options: the help, the completion and the parser read this. */
export const CACHE_SUBCOMMANDS: Record<string, Subcommand> = {
  stats: { usage: '', summary: 'NARs, chunks, bytes (logical and on disk), dedup ratio, hit rate', options: COMMON },
  verify: { usage: '', summary: 're-hash every chunk; drop bad chunks and the NARs that need them', options: COMMON },
  gc: { usage: '', summary: 'evict down to cache-size, remove leftovers (temporary files, chunks no NAR uses)', options: COMMON },
  pin: { usage: 'PATH…', summary: "keep these store paths' NARs whatever the cap", options: { ...PATHS, ...COMMON } },
  unpin: { usage: 'PATH…', summary: 'make them evictable again', options: { ...PATHS, ...COMMON } },
  import: {
    usage: 'SOURCE [PATH…] | --local PATH…',
    summary: "pre-seed the store: SOURCE is a binary cache (file:///dir, a directory written by 'nix copy --to file://…', or https://…) whose narinfos must be signed by a trusted key; PATHs (default: all of a directory cache) are taken from it. With --local, PATHs of the local Nix store.",
    options: {
      ...PATHS,
      local: { type: 'boolean', help: 'the paths come from the local Nix store' },
      'trusted-public-keys': { ...settingOptions(['trusted-public-keys'])['trusted-public-keys']!, help: "keys a cache's narinfos must be signed by" },
      ...COMMON
    }
  },
  clear: { usage: '', summary: "delete everything the store holds (stop 'narswarm serve' first)", options: COMMON }
}

const CACHE_COMMANDS = Object.keys(CACHE_SUBCOMMANDS)

export const CACHE_DESCRIPTION = 'The chunk store: every NAR narswarm verified, kept as deduplicated chunks (docs/chunk-store.md).'

export async function cacheCommand (argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  if (sub === undefined) throw new UsageError(`cache: name a command: ${CACHE_COMMANDS.join(', ')}`)
  const spec = CACHE_SUBCOMMANDS[sub]
  if (spec === undefined) throw new UsageError(`cache: unknown command '${sub}'${didYouMean(sub, CACHE_COMMANDS)}; 'narswarm cache help' lists them`)
  const parsed = parseCommandLine(`cache ${sub}`, rest, spec.options ?? {}, Infinity)
  const { values: flags, positionals } = parsed
  const takesPaths = sub === 'pin' || sub === 'unpin' || sub === 'import'
  if (!takesPaths && positionals.length > 0) return usage(sub, `takes no arguments, got '${positionals[0]}'`)
  const fromCache = sub === 'import' && flags.local !== true
  if (fromCache && positionals.length === 0) return usage(sub, 'needs a binary cache (file:///dir, a directory or https://…), or --local PATH…')
  const paths = takesPaths ? await readPathList(fromCache ? positionals.slice(1) : positionals, list(flags, 'paths-from')) : []
  if ((sub === 'pin' || sub === 'unpin') && paths.length === 0) return usage(sub, 'needs at least one store path')
  if (sub === 'import' && flags.local === true && paths.length === 0) return usage(sub, '--local needs at least one store path')

  let config: Config
  try {
    config = loadConfig({ flags: settingFlags(flags, ['config', 'state-dir', 'cache-size', 'trusted-public-keys']), env: process.env })
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`cache ${sub}: ${err.message}`)
    throw err
  }
  const db = openDatabase(stateDatabase(config.stateDir))
  let store: LocalChunkStore | undefined
  try {
    if (sub === 'clear') {
      await clearChunkStore(db, config.stateDir)
      process.stdout.write(`emptied the chunk store in ${config.stateDir}\n`)
      return 0
    }
    store = await LocalChunkStore.open({ db, dir: config.stateDir, capacity: config.cacheSize })
    const narInfos = new NarInfoCache(db, { positiveTtl: config.narinfoPositiveTtl, negativeTtl: config.narinfoNegativeTtl })
    switch (sub) {
      case 'stats': printStats(store); return 0
      case 'verify': {
        const r = await store.verify()
        for (const hex of r.bad) process.stdout.write(`bad chunk ${hex}\n`)
        process.stdout.write(`verified ${r.chunks} chunks: ${r.bad.length} bad, ${r.droppedNars} NARs dropped (they will be fetched again)\n`)
        return r.bad.length === 0 ? 0 : 1
      }
      case 'gc': {
        const r = await store.gc()
        process.stdout.write(`evicted ${r.evicted} NARs; removed ${r.orphans} unused chunks, ${r.temps} temporary files, ${r.unindexedFiles + r.strays} stray files; dropped ${r.droppedNars} NARs with missing chunks\n`)
        printStats(store)
        return 0
      }
      case 'pin':
      case 'unpin': return await pin(store, narInfos, paths, sub === 'pin', flags.closure === true)
      case 'import': {
        const options = { closure: flags.closure === true, trustedKeys: config.trustedPublicKeys, onPath: (path: string, outcome: string) => { process.stdout.write(`${outcome} ${path}\n`) } }
        const r: ImportReport = flags.local === true
          ? await importFromLocalStore(store, paths, options)
          : await importFromCache(store, narInfos, cacheSpec(positionals[0]!), paths, options)
        for (const f of r.failed) process.stdout.write(`failed ${f.path}: ${f.reason}\n`)
        process.stdout.write(`imported ${r.imported} NARs (${formatBytes(r.bytes)}), ${r.present} already present, ${r.failed.length} failed\n`)
        return r.failed.length === 0 ? 0 : 1
      }
    }
    return 2
  } catch (err) {
    process.stderr.write(`narswarm cache ${sub}: ${(err as Error).message}\n`)
    return 1
  } finally {
    await store?.close()
    db.close()
  }
}

function usage (sub: string, message: string): never {
  throw new UsageError(`cache ${sub}: ${message}; 'narswarm cache help' lists the commands`)
}

/** A directory or file:// URL as a file:// spec; other URLs as they are. */
function cacheSpec (source: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(source)) return source
  return pathToFileURL(resolve(source)).href
}

function printStats (store: LocalChunkStore): void {
  const s = store.stats()
  const asked = s.hits + s.misses
  const rows: Array<[string, string]> = [
    ['NARs', `${s.nars}${s.pinned > 0 ? ` (${s.pinned} pinned)` : ''}`],
    ['chunks', String(s.chunks)],
    ['logical bytes', formatBytes(s.logicalBytes)],
    ['unique bytes', formatBytes(s.uniqueBytes)],
    ['stored bytes', `${formatBytes(s.storedBytes)} of ${formatBytes(s.capacity)} (cache-size)${s.unusedBytes > 0 ? `, ${formatBytes(s.unusedBytes)} of it unused records ('cache gc' reclaims them)` : ''}`],
    ['dedup ratio', `${s.dedupRatio.toFixed(2)}× (logical / stored)`],
    ['hits / misses', `${s.hits} / ${s.misses}${asked > 0 ? ` (${(100 * s.hits / asked).toFixed(1)} % hit rate)` : ''}`],
    ['chunker', store.cdcId]
  ]
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(15)} ${v}\n`)
}

/** Pins or unpins the NARs of store paths (and their closures). */
async function pin (store: LocalChunkStore, narInfos: NarInfoCache, paths: string[], pinned: boolean, closure: boolean): Promise<number> {
  const roots = paths.map(storePathOf)
  const all = closure ? await closureOf(roots, narInfos) : roots
  let missing = 0
  for (const path of all) {
    const narHash = store.narHashOf(path)
    if (narHash === undefined || !store.pin(new NixHash('sha256', narHash), pinned)) {
      process.stdout.write(`not in the chunk store: ${path}\n`)
      missing++
    } else process.stdout.write(`${pinned ? 'pinned' : 'unpinned'} ${path}\n`)
  }
  process.stdout.write(`${pinned ? 'pinned' : 'unpinned'} ${all.length - missing} of ${all.length} paths\n`)
  return missing === 0 ? 0 : 1
}

/**
 * The closure of `roots`: through the references of the narinfos the state database holds, and,
 * for a path it knows no narinfo of, through the local Nix store when the path is valid there.
 */
async function closureOf (roots: string[], narInfos: NarInfoCache): Promise<string[]> {
  const seen = new Set<string>()
  const local: string[] = []
  const queue = [...roots]
  while (queue.length > 0) {
    const path = queue.shift()!
    if (seen.has(path)) continue
    seen.add(path)
    const cached = narInfos.get(parseStorePath(path).hashPart)
    if (cached?.present !== true) { local.push(path); continue }
    for (const ref of NarInfo.parse(cached.text).references) queue.push(`${STORE_DIR}/${ref}`)
  }
  if (local.length > 0) {
    const { infos, invalid } = await queryPathInfos(local, { recursive: true })
    for (const info of infos) seen.add(info.storePath)
    for (const bad of invalid) process.stdout.write(`closure unknown (no narinfo, not in the local store): ${bad.path}\n`)
  }
  return [...seen]
}
