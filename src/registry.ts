/**
 * Which implementation a spec names. The scheme before any `+` picks the plug-in
 * (`mirror+https://a/,https://b/` → `mirror`, `http+https://index/` → `http`); each plug-in module
 * is imported only when a spec names it, so a heavy dependency (the S3 SDK, later IPFS or
 * BitTorrent) costs nothing unless it is configured. Adding an implementation costs one line here.
 */
import { ConfigError } from './errors.ts'
import { redactUrl } from './log.ts'
import type { Backend, BackendPlugin, Components, Mapper, MapperPlugin } from './types.ts'
import { relativePathError } from './util/values.ts'

const MAPPERS: Record<string, () => Promise<MapperPlugin<any>>> = {
  sqlite: async () => (await import('./mapper/sqlite.ts')).plugin,
  folder: async () => (await import('./mapper/folder.ts')).plugin,
  http: async () => (await import('./mapper/http.ts')).plugin,
  exec: async () => (await import('./mapper/exec.ts')).plugin
}

const BACKENDS: Record<string, () => Promise<BackendPlugin<any>>> = {
  file: async () => (await import('./backend/file.ts')).plugin,
  mirror: async () => (await import('./backend/mirror.ts')).plugin,
  s3: async () => (await import('./backend/s3.ts')).plugin,
  exec: async () => (await import('./backend/exec.ts')).plugin,
  ipfs: async () => (await import('./backend/ipfs/plugin.ts')).plugin,
  torrent: async () => (await import('./backend/torrent/index.ts')).plugin
}

export const MAPPER_SCHEMES: readonly string[] = Object.keys(MAPPERS)
export const BACKEND_SCHEMES: readonly string[] = Object.keys(BACKENDS)

/** The registry key of a spec and the spec as a URL. */
function parseSpec (spec: string, kind: 'mapper' | 'backend'): { scheme: string, url: URL } {
  let url: URL
  try {
    url = new URL(spec)
  } catch {
    throw new ConfigError(`${kind} '${spec}' is not a URL-style spec (e.g. ${kind === 'mapper' ? 'sqlite:, folder:///srv/index' : 'file:///srv/nars, mirror+https://a/,https://b/'})`)
  }
  const scheme = url.protocol.slice(0, -1).split('+')[0]!
  const known = kind === 'mapper' ? MAPPER_SCHEMES : BACKEND_SCHEMES
  if (!known.includes(scheme)) throw new ConfigError(`unknown ${kind} scheme '${scheme}' in '${redactUrl(url)}' (known: ${known.join(', ')})`)
  refuseRelativePath(spec, url, kind)
  return { scheme, url }
}

/**
 * `file:` is a special scheme to the URL parser, which does not keep text right after it relative
 * (`file:nars` parses as `file:///nars`, a directory at the root), so the file plug-in cannot tell
 * and the relative path is refused here, on the text as written. Every other local-path scheme
 * (`folder:`, `sqlite:`, `exec:`, `torrent:`) keeps the text as an opaque path, and its plug-in
 * refuses it in `parse`.
 */
function refuseRelativePath (spec: string, url: URL, kind: 'mapper' | 'backend'): void {
  if (url.protocol !== 'file:') return
  const rest = spec.slice(url.protocol.length)
  if (rest === '' || rest.startsWith('/') || rest.startsWith('?') || rest.startsWith('#')) return
  const end = rest.search(/[?#]/)
  const path = end < 0 ? rest : rest.slice(0, end)
  let decoded = path
  try { decoded = decodeURIComponent(path) } catch {}
  throw relativePathError(`${kind} '${url.protocol}${path}'`, url, decoded)
}

/** A mapper spec checked in full (scheme and options), ready to open. */
async function preparedMapper (spec: string): Promise<(components: Components) => Promise<Mapper>> {
  const { scheme, url } = parseSpec(spec, 'mapper')
  const plugin = await MAPPERS[scheme]!()
  const init = plugin.parse(url)
  return async components => await plugin.create(init, components)
}

/** A backend spec checked in full (scheme and options), ready to open. */
async function preparedBackend (spec: string): Promise<(components: Components) => Promise<Backend>> {
  const { scheme, url } = parseSpec(spec, 'backend')
  const plugin = await BACKENDS[scheme]!()
  const init = plugin.parse(url)
  return async components => await plugin.create(init, components)
}

/** Validates a spec without opening anything. */
export async function checkSpec (spec: string, kind: 'mapper' | 'backend'): Promise<void> {
  await (kind === 'mapper' ? preparedMapper(spec) : preparedBackend(spec))
}

export async function openMapper (spec: string, components: Components): Promise<Mapper> {
  return await (await preparedMapper(spec))(components)
}

export async function openBackend (spec: string, components: Components): Promise<Backend> {
  return await (await preparedBackend(spec))(components)
}

export interface Plugins {
  mappers: Mapper[]
  backends: Backend[]
  close: () => Promise<void>
}

/**
 * Opens every configured mapper and backend, after checking all their specs: a mistake in the last
 * spec is one error before anything starts (an IPFS node, a torrent client). If one fails to open,
 * those already open are closed again.
 */
export async function openPlugins (mapperSpecs: readonly string[], backendSpecs: readonly string[], components: Components): Promise<Plugins> {
  const mappers = []
  for (const spec of mapperSpecs) mappers.push(await preparedMapper(spec))
  const backends = []
  for (const spec of backendSpecs) backends.push(await preparedBackend(spec))
  const plugins: Plugins = {
    mappers: [],
    backends: [],
    close: async () => { await Promise.all([...plugins.mappers, ...plugins.backends].map(async p => await p.close?.())) }
  }
  try {
    for (const open of mappers) plugins.mappers.push(await open(components))
    for (const open of backends) plugins.backends.push(await open(components))
  } catch (err) {
    await plugins.close()
    throw err
  }
  return plugins
}

/** Every registered scheme with its plug-in's own summary, for help text (imports every plug-in module). */
export async function pluginSummaries (): Promise<{ mappers: Array<{ scheme: string, summary: string }>, backends: Array<{ scheme: string, summary: string }> }> {
  const load = async (table: Record<string, () => Promise<{ summary: string }>>): Promise<Array<{ scheme: string, summary: string }>> =>
    await Promise.all(Object.entries(table).map(async ([scheme, plugin]) => ({ scheme, summary: (await plugin()).summary })))
  return { mappers: await load(MAPPERS), backends: await load(BACKENDS) }
}
