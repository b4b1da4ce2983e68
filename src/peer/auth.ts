/**
 * The optional group key (`peer-key`): when set, every peer request carries
 * `Authorization: NARSWARM-HMAC-SHA256 ts=<unix seconds>,mac=<hex>` where `mac` is
 * HMAC-SHA256(key, METHOD "\n" PATH "\n" ts "\n" hex(sha256(body))), and the listener refuses any
 * request whose MAC does not match (compared in constant time) or whose timestamp is more than 60 s
 * away from its own clock. Strangers on the LAN can then neither ask nor download. The MAC covers
 * the request, not the answer: answers are checked against chunk ids and the signed NarHash anyway.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.ts'
import { groupTag } from './announcement.ts'

const AUTH_SCHEME = 'NARSWARM-HMAC-SHA256'
const MAX_SKEW_SECONDS = 60
const EMPTY_BODY_HASH = createHash('sha256').digest('hex')

export class GroupKey {
  readonly #key: Buffer

  constructor (secret: string) {
    if (secret.length < 16) throw new ConfigError('peer-key must be at least 16 characters (e.g. `openssl rand -hex 32`)')
    this.#key = Buffer.from(secret, 'utf8')
  }

  /** The `Authorization` header value for a request. */
  authorization (method: string, path: string, body?: Uint8Array, now = Date.now()): string {
    const ts = Math.floor(now / 1000)
    return `${AUTH_SCHEME} ts=${ts},mac=${this.#mac(method, path, ts, bodyHash(body))}`
  }

  /** Whether a request's `Authorization` header is valid for this key. */
  verify (header: string | undefined, method: string, path: string, body?: Uint8Array, now = Date.now()): boolean {
    if (header === undefined) return false
    const m = /^NARSWARM-HMAC-SHA256 ts=(\d{1,12}),mac=([0-9a-f]{64})$/.exec(header)
    if (m === null) return false
    const ts = Number(m[1])
    if (Math.abs(now / 1000 - ts) > MAX_SKEW_SECONDS) return false
    const expected = Buffer.from(this.#mac(method, path, ts, bodyHash(body)), 'hex')
    return timingSafeEqual(expected, Buffer.from(m[2]!, 'hex'))
  }

  /**
   * The tag node `nodeId` announces in discovery's TXT `g`, so nodes of other groups are not asked;
   * salted with the node id, so an observer cannot tell which nodes share a key (announcement.ts).
   */
  tag (nodeId: string): string {
    return groupTag(this.#key, nodeId)
  }

  #mac (method: string, path: string, ts: number, hash: string): string {
    return createHmac('sha256', this.#key).update(`${method}\n${path}\n${ts}\n${hash}`).digest('hex')
  }
}

function bodyHash (body?: Uint8Array): string {
  return body === undefined || body.length === 0 ? EMPTY_BODY_HASH : createHash('sha256').update(body).digest('hex')
}

/** `peer-key` / `peer-key-file` settings into a key; undefined when neither is set. */
export function loadGroupKey (value: string, file: string): GroupKey | undefined {
  if (value !== '' && file !== '') throw new ConfigError('set peer-key or peer-key-file, not both')
  if (file !== '') {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read peer-key-file ${file}: ${(err as Error).message}`)
    }
    return new GroupKey(text.trim())
  }
  return value === '' ? undefined : new GroupKey(value)
}
