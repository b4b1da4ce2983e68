/**
 * What the local Nix store knows about its paths (NarHash, NarSize, references, deriver,
 * signatures, content address), read through `nix path-info --json`. The CLI rather than the
 * SQLite database: the database is root's, locked by the daemon on multi-user installs and its
 * schema is private, while `path-info --json` is public and stable in meaning. Its shape did
 * change: Nix up to 2.18 prints an array of objects with `path` and a nix32 or SRI `narHash`,
 * later versions an object keyed by store path with SRI hashes; both are read here.
 */
import { spawn } from 'node:child_process'
import { FormatError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import { realpathSync } from 'node:fs'
import { parseStorePath, STORE_DIR, toStorePath } from '../nix/store-path.ts'

export interface PathInfo {
  storePath: string
  narHash: NixHash
  narSize: number
  /** Full store paths. */
  references: string[]
  deriver?: string
  sigs: string[]
  ca?: string
}

/** Parses the output of `nix path-info --json` of any Nix version; paths it says are not valid are listed apart. */
export function parsePathInfoJson (text: string): { infos: PathInfo[], invalid: string[] } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new FormatError(`nix path-info printed something that is not JSON: ${(err as Error).message}`)
  }
  const entries: Array<[string, Record<string, unknown>]> = Array.isArray(json)
    ? json.map(o => [String((o as Record<string, unknown>).path), o as Record<string, unknown>])
    : Object.entries(json as Record<string, Record<string, unknown>>)
  const invalid: string[] = []
  const infos = entries.flatMap(([path, o]) => {
    // Nix reports a path the store does not have as `"valid": false` (2.8) or `null` (later).
    if (o === null || o.valid === false) { invalid.push(path); return [] }
    const narSize = o.narSize
    if (typeof o.narHash !== 'string' || typeof narSize !== 'number') throw new FormatError(`nix path-info: ${path} has no narHash/narSize`)
    parseStorePath(path)
    const info: PathInfo = {
      storePath: path,
      narHash: NixHash.parse(o.narHash),
      narSize,
      references: Array.isArray(o.references) ? o.references.map(String) : [],
      sigs: Array.isArray(o.signatures) ? o.signatures.map(String) : []
    }
    if (typeof o.deriver === 'string' && o.deriver !== '') info.deriver = o.deriver
    if (typeof o.ca === 'string' && o.ca !== '') info.ca = o.ca
    return [info]
  })
  return { infos, invalid }
}

export interface QueryOptions {
  /** The whole closure of the given paths. */
  recursive?: boolean
  /** Every valid path in the store (paths are then ignored). */
  all?: boolean
  signal?: AbortSignal
}

/**
 * Paths per `nix path-info` run. The argument list of a process is limited (ARG_MAX, a few MiB with
 * the environment: about 30,000 store paths), so the list never goes on one command line whole.
 */
export const PATHS_PER_RUN = 2000

/**
 * Path infos of `paths` from the local store, asked `PATHS_PER_RUN` at a time. Paths the store does
 * not have are returned in `invalid` with Nix's own message, one by one, so the others still get
 * published.
 */
/**
 * The store path a command-line argument names, read as Nix reads one: a store path, a path inside
 * one (`…/bin/hello`), or a link to either outside the store (`./result`, as nix-build leaves it),
 * followed the way `nix path-info ./result` follows it. Throws FormatError when it names none.
 */
export function storePathOf (arg: string): string {
  let path = arg
  if (!arg.startsWith(`${STORE_DIR}/`)) {
    // Not a file here: parsed as given, so the error names what was given.
    try { path = realpathSync(arg) } catch {}
  }
  return parseStorePath(toStorePath(path)).path
}

export async function queryPathInfos (paths: readonly string[], options: QueryOptions = {}): Promise<{ infos: PathInfo[], invalid: Array<{ path: string, reason: string }> }> {
  if (options.all === true || paths.length <= PATHS_PER_RUN) return await queryBatch(paths, options)
  // Closures of different batches overlap: each path once.
  const infos = new Map<string, PathInfo>()
  const invalid: Array<{ path: string, reason: string }> = []
  for (let i = 0; i < paths.length; i += PATHS_PER_RUN) {
    const batch = await queryBatch(paths.slice(i, i + PATHS_PER_RUN), options)
    for (const info of batch.infos) infos.set(info.storePath, info)
    invalid.push(...batch.invalid)
  }
  return { infos: [...infos.values()], invalid }
}

async function queryBatch (paths: readonly string[], options: QueryOptions): Promise<{ infos: PathInfo[], invalid: Array<{ path: string, reason: string }> }> {
  const flags = [...(options.recursive === true ? ['--recursive'] : []), ...(options.all === true ? ['--all'] : [])]
  const batch = await nixPathInfo([...flags, ...(options.all === true ? [] : paths)], options.signal)
  if (batch.ok) {
    const parsed = parsePathInfoJson(batch.stdout)
    return { infos: parsed.infos, invalid: parsed.invalid.map(path => ({ path, reason: 'not a valid path in the local Nix store' })) }
  }
  if (options.all === true || paths.length === 0) throw new Error(`nix path-info failed: ${batch.stderr}`)
  // Find the paths at fault: ask for each alone.
  const infos = new Map<string, PathInfo>()
  const invalid: Array<{ path: string, reason: string }> = []
  for (const path of paths) {
    const one = await nixPathInfo([...flags, path], options.signal)
    const parsed = one.ok ? parsePathInfoJson(one.stdout) : undefined
    if (parsed !== undefined && parsed.invalid.length === 0) for (const info of parsed.infos) infos.set(info.storePath, info)
    else if (parsed !== undefined) invalid.push({ path, reason: 'not a valid path in the local Nix store' })
    else invalid.push({ path, reason: one.stderr.replace(/^error:\s*/, '') || 'nix path-info failed' })
  }
  return { infos: [...infos.values()], invalid }
}

async function nixPathInfo (args: string[], signal?: AbortSignal): Promise<{ ok: boolean, stdout: string, stderr: string }> {
  const child = spawn('nix', ['--extra-experimental-features', 'nix-command', 'path-info', '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], ...(signal === undefined ? {} : { signal })
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', resolve)
  }).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('the Nix command line (nix) is not installed or not on PATH')
    throw err
  })
  return { ok: code === 0, stdout, stderr: stderr.trim().split('\n').filter(l => !l.startsWith('warning:')).join('\n') }
}

/**
 * Orders path infos so that every path comes after the paths it refers to (those in the list),
 * as a binary cache must be filled for a reader never to meet a dangling reference. Ties keep the
 * input order; self-references are ignored.
 */
export function referencesFirst<T extends { storePath: string, references: string[] }> (items: T[]): T[] {
  const byPath = new Map(items.map(i => [i.storePath, i]))
  const done = new Set<string>()
  const out: T[] = []
  for (const root of items) {
    // Iterative depth-first walk: closures can be deep enough to overflow a recursive one.
    const stack: Array<{ item: T, next: number }> = [{ item: root, next: 0 }]
    const onStack = new Set<string>([root.storePath])
    if (done.has(root.storePath)) continue
    while (stack.length > 0) {
      const top = stack.at(-1)!
      const ref = top.item.references[top.next++]
      if (ref === undefined) {
        stack.pop()
        onStack.delete(top.item.storePath)
        if (!done.has(top.item.storePath)) { done.add(top.item.storePath); out.push(top.item) }
        continue
      }
      const child = byPath.get(ref)
      if (child === undefined || done.has(ref) || onStack.has(ref)) continue
      stack.push({ item: child, next: 0 })
      onStack.add(ref)
    }
  }
  return out
}
