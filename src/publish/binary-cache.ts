/**
 * A binary cache read as a source for `narswarm publish --from-cache`: an HTTP(S) cache through
 * the same client the substituter uses for its upstreams, or a `file://` directory that `nix copy`
 * wrote. Either way a narinfo counts only when signed by a trusted key (or `require-sigs=false`),
 * and only a `file://` cache can be listed — HTTP caches have no listing, so their paths must be
 * named.
 */
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../errors.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { trustedKeyMap, type PublicKey } from '../nix/signature.ts'
import { isHashPart } from '../nix/store-path.ts'
import { readFileChunks } from '../util/file-stream.ts'
import { parseUpstreamSpec, type UpstreamConfig } from '../upstream/spec.ts'
import { parseServedNarInfo, trustProblem, Upstream, type NarInfoAnswer, type NarStream } from '../upstream/upstream.ts'

export interface BinaryCache {
  readonly name: string
  /** The keys its narinfos are checked with: signatures by them are the ones worth keeping. */
  readonly trustedKeys: readonly string[]
  narInfo: (hashPart: string, signal?: AbortSignal) => Promise<NarInfoAnswer>
  /** The compressed NAR file a narinfo names; undefined when the cache says it is gone. */
  openNar: (narInfo: NarInfo, signal?: AbortSignal) => Promise<NarStream | undefined>
  /** The absolute URL of the NAR file a narinfo names. */
  narUrl: (narInfo: NarInfo) => string
  /** Every store-path hash part the cache has a narinfo for; only where the cache can be listed. */
  list?: () => AsyncIterable<string>
  close: () => Promise<void>
}

/**
 * Opens `spec` (`https://…?trusted-public-keys=…` or `file:///dir?…`). Its narinfos are checked
 * against the keys on the URL — the cache's own, trusted for its narinfos — and `readerKeys`, the
 * keys the index's readers trust.
 */
export function openBinaryCache (spec: string, readerKeys: readonly string[]): BinaryCache {
  const withKeys = readerKeys.length === 0
    ? spec
    : `${spec}${spec.includes('?') ? '&' : '?'}trusted-public-keys=${readerKeys.map(encodeURIComponent).join('%20')}`
  if (!spec.startsWith('file:')) {
    const config = parseUpstreamSpec(withKeys)
    const upstream = new Upstream(config)
    return {
      name: upstream.name,
      trustedKeys: config.trustedPublicKeys,
      narInfo: async (hashPart, signal) => await upstream.fetchNarInfo(hashPart, signal === undefined ? {} : { signal }),
      openNar: async (narInfo, signal) => await upstream.openNar(narInfo, signal === undefined ? {} : { signal }),
      narUrl: narInfo => upstream.resolve(narInfo.url),
      close: async () => await upstream.close()
    }
  }
  let dir: string
  try {
    dir = fileURLToPath(new URL(spec.replace(/\?.*$/, '')))
  } catch (err) {
    throw new ConfigError(`cache '${spec}': ${(err as Error).message}`)
  }
  // The options (keys, require-sigs) are those of an HTTP cache; validated by the same parser.
  const options = parseUpstreamSpec(withKeys.replace(/^file:[^?]*/, 'http://file.invalid'))
  return new FileCache(dir, options)
}

class FileCache implements BinaryCache {
  readonly name: string
  readonly trustedKeys: readonly string[]
  readonly #dir: string
  readonly #requireSigs: boolean
  readonly #keys: ReadonlyMap<string, PublicKey>

  constructor (dir: string, options: UpstreamConfig) {
    this.#dir = dir
    this.#requireSigs = options.requireSigs
    this.#keys = trustedKeyMap(options.trustedPublicKeys)
    this.trustedKeys = options.trustedPublicKeys
    this.name = `file://${dir}`
  }

  async narInfo (hashPart: string): Promise<NarInfoAnswer> {
    let text: string
    try {
      text = await readFile(join(this.#dir, `${hashPart}.narinfo`), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent', status: 404 }
      throw err
    }
    const parsed = parseServedNarInfo(text, hashPart)
    if (parsed.kind === 'rejected') return parsed
    const trust = trustProblem(parsed.narInfo, this.#requireSigs, this.#keys)
    if (trust !== undefined) return { kind: 'rejected', reason: trust }
    return { kind: 'found', narInfo: parsed.narInfo, text }
  }

  async openNar (narInfo: NarInfo): Promise<NarStream | undefined> {
    const file = join(this.#dir, narInfo.url)
    const st = await stat(file).catch(() => undefined)
    if (st?.isFile() !== true) return undefined
    return { body: readFileChunks(file, { size: st.size }), compression: narInfo.compression, fileSize: st.size }
  }

  narUrl (narInfo: NarInfo): string {
    return new URL(narInfo.url, `file://${this.#dir}/`).href
  }

  async * list (): AsyncIterable<string> {
    for (const name of await readdir(this.#dir)) {
      if (name.endsWith('.narinfo') && isHashPart(name.slice(0, -8))) yield name.slice(0, -8)
    }
  }

  async close (): Promise<void> {}
}
