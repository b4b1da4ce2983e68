/**
 * The two plug-in interfaces behind the substituter (DESIGN.md "The parts"): a Mapper knows where a
 * NAR can be found, a Backend fetches (and optionally publishes) the bytes. Both are chosen by
 * URL-style specs (`sqlite:///var/lib/narswarm/index.db`, `mirror+https://a/,https://b/`); the
 * scheme before `+` picks the implementation. A missing thing is a value (`[]`, `undefined`); a
 * failure throws a named error from `src/errors.ts`; an optional capability is an optional method,
 * never a stub that throws.
 *
 * Every NAR is identified by its NarHash (signed, portable). A mapper also accepts the FileHash of
 * a compressed NAR as a key, so indexes keyed the way nix-subsubd keyed them (sha256 of the
 * `.nar.xz`) keep working.
 */
import type { NixHash } from './nix/hash.ts'

export interface AbortOptions {
  signal?: AbortSignal
}

/** Where the bytes of one NAR can be fetched, in one backend's terms. */
export interface Locator {
  /**
   * URL-style address; its scheme picks the backend: `file:///srv/nars/x.nar.zst`,
   * `https://mirror/nar/x.nar.xz`, `s3://bucket/key`, `ipfs:bafy…`, `magnet:?xt=…`.
   */
  url: string
  /** Compression of the bytes at that address (`none`, `xz`, `zstd`, `bzip2`, `br`). */
  compression: string
  /** Size of the bytes at that address, when known. */
  fileSize?: number
}

export interface Mapper {
  /** The name in logs: its config key, else its spec without credentials. */
  readonly name: string
  /**
   * Locators of the NAR whose NarHash (or FileHash) is `key`; `[]` when unknown. Never throws for
   * an unknown key; throws when the index itself cannot be read.
   */
  lookup: (key: NixHash, options?: AbortOptions) => Promise<Locator[]>
  /**
   * The signed narinfo text of the store path with this hash part, if this mapper keeps narinfos;
   * undefined when it does not know the path. Whoever uses it still checks the signatures.
   */
  narInfo?: (hashPart: string, options?: AbortOptions) => Promise<string | undefined>
  /**
   * Records that the NAR `narHash` can be fetched at `locator` (and, with `narInfo`, its signed
   * narinfo, which also keys it by its FileHash). Idempotent: recording the same pair twice leaves
   * one entry. Safe to call concurrently.
   */
  record?: (narHash: NixHash, locator: Locator, options?: AbortOptions & { narInfo?: string }) => Promise<void>
  /**
   * Every entry of the index, each NarHash once, for `narswarm index export`; only indexes that
   * can be listed have it.
   */
  entries?: (options?: AbortOptions) => AsyncIterable<IndexEntry>
  /** Releases resources. Idempotent. */
  close?: () => Promise<void>
}

/** One NAR as an index knows it: where it is, and the narinfos (store paths) that name it. */
export interface IndexEntry {
  narHash: NixHash
  locators: Locator[]
  narInfos: string[]
}

/** The bytes a backend delivers. */
export interface NarSource {
  body: AsyncIterable<Uint8Array>
  compression: string
  fileSize?: number
}

/** A NAR offered to a backend for publishing: uncompressed bytes with their signed identity. */
export interface NarUpload {
  narHash: NixHash
  narSize: number
  body: AsyncIterable<Uint8Array>
}

export interface Backend {
  readonly name: string
  /** The locator schemes this backend opens (`file`, `https`, `s3`…). */
  readonly schemes: readonly string[]
  /**
   * Opens the bytes at `locator`; undefined when the backend says they are not there. Throws for a
   * failure (unreachable, timeout). Aborting the signal, or stopping to read the body, stops the
   * producer and frees its resources.
   */
  open: (locator: Locator, options?: AbortOptions) => Promise<NarSource | undefined>
  /** Stores a NAR and returns where it can be fetched. Idempotent for the same NarHash. */
  publish?: (nar: NarUpload, options?: AbortOptions) => Promise<Locator>
  /**
   * Whether this backend still holds what it published at `locator`, for a backend that can lose
   * it (the torrent backend seeds from files that can be deleted). `publish` publishes again a
   * recorded path whose locator fails this, instead of skipping it.
   */
  has?: (locator: Locator, options?: AbortOptions) => Promise<boolean>
  /** Releases resources. Idempotent. */
  close?: () => Promise<void>
}

/** What every plug-in gets from the process that creates it. */
export interface Components {
  log: import('./log.ts').Logger
  /** narswarm's state directory, for plug-ins that keep files (absolute path). */
  stateDir: string
}

/**
 * A plug-in descriptor, exported as `plugin` by each implementation module. `parse` validates a
 * spec and throws ConfigError naming what is wrong (before anything is opened); `create` opens it.
 */
export interface Plugin<Init, T> {
  /** Registry key: the spec's scheme before any `+`. */
  scheme: string
  /** One line for `narswarm help`. */
  summary: string
  parse: (spec: URL) => Init
  create: (init: Init, components: Components) => Promise<T>
}

export type MapperPlugin<Init = unknown> = Plugin<Init, Mapper>
export type BackendPlugin<Init = unknown> = Plugin<Init, Backend>
