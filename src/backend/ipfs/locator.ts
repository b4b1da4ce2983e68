/**
 * IPFS locators: `ipfs://<cid>`, the form browsers and the IPFS URL conventions use, where the CID
 * is the root of a UnixFS file (or a single raw block) holding the uncompressed NAR. The CID is
 * re-encoded in base32 CIDv1 so that two spellings of one DAG (`Qm…`, `bafy…`) give one locator;
 * `ipfs:<cid>` is read too, and written never.
 */
import { CID } from 'multiformats/cid'

/** Multicodec codes of the blocks a NAR's DAG is made of. */
export const RAW = 0x55
export const DAG_PB = 0x70
/** The only multihash narswarm creates and accepts: sha2-256. */
export const SHA2_256 = 0x12
/** The largest block accepted from anyone: above the 1 MiB narswarm makes and bitswap's 2 MiB. */
export const MAX_BLOCK = 4 << 20

/** The locator URL of a root CID. */
export function locatorOf (cid: CID): string {
  return `ipfs://${cid.toV1().toString()}`
}

/**
 * The root CID a locator names, or undefined when the locator is not an IPFS locator or names
 * something that cannot be a file (another codec or hash): this backend then knows it holds no NAR.
 */
export function cidOf (url: string): CID | undefined {
  const m = /^ipfs:(?:\/\/)?([A-Za-z0-9]+)\/?$/.exec(url)
  if (m === null) return undefined
  let cid: CID
  try { cid = CID.parse(m[1]!) } catch { return undefined }
  if (cid.code !== RAW && cid.code !== DAG_PB) return undefined
  if (cid.multihash.code !== SHA2_256) return undefined
  return cid
}
