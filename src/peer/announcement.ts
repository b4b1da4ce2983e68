/**
 * What a node says about itself in its DNS-SD TXT record, and whether another node's record makes
 * it a peer. The record carries only what a browser needs to decide without a request: the peer
 * protocol version (`v`), the chunker id (`cdc`: chunks are fetched only from nodes with ours),
 * the node id (`id`, to recognise our own announcements and a peer that moved), and, with a group
 * key, a group tag (`g`). The tag is an HMAC of the announcing node's id under the group key, so
 * members recognise each other while a stranger learns neither the key nor which nodes share one,
 * and cannot precompute tags for guessed keys. It is a filter, not authentication: every peer
 * request is still authenticated with the key itself.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { PROTOCOL_VERSION, SERVICE_TYPE } from './protocol.ts'

/** The DNS-SD service type as mDNS names it (`_narswarm._tcp.local`). */
export const MDNS_SERVICE_TYPE = `_${SERVICE_TYPE}._tcp.local`
/** The service type ncro and similar tools browse for binary caches. */
export const NIX_SERVE_SERVICE_TYPE = '_nix-serve._tcp.local'

export interface Announcement {
  version: string
  nodeId: string
  cdcId: string
  /** The group tag; absent when the node has no group key. */
  group?: string
}

/** A node id (node-id.ts): 32 lowercase hex digits, also a valid DNS label. */
const NODE_ID = /^[0-9a-f]{32}$/

/** The group tag node `nodeId` announces under `groupKey`. */
export function groupTag (groupKey: string | Uint8Array, nodeId: string): string {
  return createHmac('sha256', groupKey).update(`narswarm group tag ${nodeId}`).digest('hex').slice(0, 32)
}

export function encodeTxt (a: Announcement): string[] {
  const fields = [`v=${a.version}`, `id=${a.nodeId}`, `cdc=${a.cdcId}`]
  if (a.group !== undefined) fields.push(`g=${a.group}`)
  return fields
}

/** The announcement in TXT strings; undefined when the record is not one of ours or is malformed. */
export function decodeTxt (strings: ReadonlyArray<string | Uint8Array>): Announcement | undefined {
  const fields = new Map<string, string>()
  for (const s of strings) {
    const text = typeof s === 'string' ? s : Buffer.from(s).toString('utf8')
    const eq = text.indexOf('=')
    // RFC 6763 §6.4: the first occurrence of a key wins.
    if (eq > 0 && !fields.has(text.slice(0, eq).toLowerCase())) fields.set(text.slice(0, eq).toLowerCase(), text.slice(eq + 1))
  }
  const version = fields.get('v')
  const nodeId = fields.get('id')
  const cdcId = fields.get('cdc')
  if (version === undefined || nodeId === undefined || !NODE_ID.test(nodeId) || cdcId === undefined || cdcId === '') return undefined
  const group = fields.get('g')
  return group === undefined ? { version, nodeId, cdcId } : { version, nodeId, cdcId, group }
}

/**
 * Why an announcement does not make a peer of its node; undefined when it does. `groupTag` is the
 * tag function of our group key (undefined without one).
 */
export function refusal (a: Announcement, own: { nodeId: string, groupTag?: ((nodeId: string) => string) | undefined }): string | undefined {
  if (a.nodeId === own.nodeId) return 'ourselves'
  if (a.version !== String(PROTOCOL_VERSION)) return `protocol version ${a.version}, not ${PROTOCOL_VERSION}`
  if (own.groupTag === undefined) return a.group === undefined ? undefined : 'member of a group (we have no group key)'
  if (a.group === undefined) return 'not in a group (we have a group key)'
  const expected = Buffer.from(own.groupTag(a.nodeId))
  const got = Buffer.from(a.group)
  return got.length === expected.length && timingSafeEqual(got, expected) ? undefined : 'another group'
}
