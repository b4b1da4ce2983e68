/**
 * The files of a binary cache beside narinfos and NARs that Nix and Lix read but narswarm does not
 * keep: build logs (`nix log`), NAR listings (Lix's `nix store ls`) and the
 * realisations of content-addressed derivations, in both layouts Nix has used. Each is relayed from
 * the upstreams as it is, the first that has it in their order; only the upstreams are asked,
 * never peers, mirrors or indexes. Nothing here is store contents: Nix checks a realisation's
 * signatures against its own trusted keys, and a log or a listing only informs. So a user who puts
 * narswarm in place of a cache loses none of what that cache offered. The bodies stream through
 * with their Content-Encoding taken off, bounded per kind, so a hostile upstream cannot make Nix
 * (which reads these files into memory) take more than a real one would send.
 */
import { FormatError, UpstreamError } from '../errors.ts'
import type { Upstream } from '../upstream/upstream.ts'

/** A store path's base name (hash part and name), as Nix allows its characters. */
const BASE_NAME = '[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\\-._?=]+'
const OUTPUT_NAME = '[A-Za-z0-9+\\-._?=]+'

export interface SideFileKind {
  /** What it is, for the documentation and the log. */
  kind: string
  /** The path as docs/protocol.md shows it. */
  shown: string
  /** Who asks for it, for docs/protocol.md. */
  readBy: string
  /** The request path (after normalisation) it answers; the whole path is relayed. */
  pattern: RegExp
  contentType: string
  /** The most bytes relayed (after any Content-Encoding came off); a longer body is cut. */
  limit: number
}

export const SIDE_FILES: readonly SideFileKind[] = [
  {
    kind: 'build log', shown: '/log/<drv base name>', readBy: '`nix log`',
    pattern: new RegExp(`^/log/${BASE_NAME}$`), contentType: 'text/plain; charset=utf-8', limit: 1 << 30
  },
  {
    kind: 'NAR listing', shown: '/<hashPart>.ls', readBy: '`nix store ls` (Lix ≥ 2.94)',
    pattern: /^\/[0-9a-df-np-sv-z]{32}\.ls$/, contentType: 'application/json', limit: 256 << 20
  },
  {
    kind: 'realisation (Nix ≤ 2.34)', shown: '/realisations/sha256:<hex>!<output>.doi', readBy: 'Nix ≤ 2.34 with `ca-derivations`',
    pattern: new RegExp(`^/realisations/sha256:[0-9a-f]{64}!${OUTPUT_NAME}\\.doi$`), contentType: 'application/json', limit: 1 << 20
  },
  {
    kind: 'realisation (Nix ≥ 2.35)', shown: '/build-trace-v2/<drv base name>/<output>.doi', readBy: 'Nix ≥ 2.35 with `ca-derivations`',
    pattern: new RegExp(`^/build-trace-v2/${BASE_NAME}\\.drv/${OUTPUT_NAME}\\.doi$`), contentType: 'application/json', limit: 1 << 20
  }
]

/** The kind of side file `path` asks for, if any. */
export function sideFileOf (path: string): SideFileKind | undefined {
  return SIDE_FILES.find(k => k.pattern.test(path))
}

export interface SideFile {
  kind: SideFileKind
  upstream: string
  body: AsyncIterable<Uint8Array>
  /** Lets go of the upstream's response, for an answer without a body (HEAD). */
  close: () => Promise<void>
}

/**
 * The file at `path` (a `sideFileOf` path) from the first of `upstreams` that has it; undefined
 * when none has it (absent, or what it sent could not be decoded). Throws the first UpstreamError
 * when none had it and one failed, so a failure is never taken for absence. The body's first
 * piece is read here, so an undecodable body counts as absent before anything is answered.
 */
export async function openSideFile (upstreams: readonly Upstream[], kind: SideFileKind, path: string, signal?: AbortSignal): Promise<SideFile | undefined> {
  let failure: Error | undefined
  for (const upstream of upstreams) {
    let iterator: AsyncIterator<Uint8Array> | undefined
    try {
      const body = await upstream.openFile(path.slice(1), signal === undefined ? {} : { signal })
      if (body === undefined) continue
      iterator = body[Symbol.asyncIterator]()
      const first = await iterator.next()
      const rest = iterator
      return { kind, upstream: upstream.name, body: bounded(first, rest, kind, upstream.name), close: async () => { await rest.return?.() } }
    } catch (err) {
      if (signal?.aborted === true) throw err
      await iterator?.return?.()
      if (err instanceof FormatError) continue
      failure ??= err instanceof UpstreamError ? err : new UpstreamError(upstream.name, `${kind.kind} ${path}: ${(err as Error).message}`, { cause: err })
    }
  }
  if (failure !== undefined) throw failure
  return undefined
}

async function * bounded (first: IteratorResult<Uint8Array>, rest: AsyncIterator<Uint8Array>, kind: SideFileKind, upstream: string): AsyncGenerator<Uint8Array> {
  let total = 0
  try {
    for (let next = first; next.done !== true; next = await rest.next()) {
      total += next.value.length
      if (total > kind.limit) throw new UpstreamError(upstream, `${kind.kind} longer than ${kind.limit} bytes`)
      yield next.value
    }
  } finally {
    await rest.return?.()
  }
}
