/**
 * Magnet links, the locators of this backend: `magnet:?xt=urn:btih:<hex info hash>&dn=<name>
 * &xl=<bytes>&tr=<tracker>…&ws=<web seed>…` (BEP 9 with the `ws` web-seed extension). The info hash
 * says what the bytes are; trackers and web seeds say where to start looking; `xl` lets a fetcher
 * check the size before it has the torrent's metadata, and answer a zero-length NAR (which cannot
 * be a torrent) without any network.
 */
import { FormatError } from '../../errors.ts'

export interface Magnet {
  /** 40 lower-case hex digits. */
  infoHash: string
  name?: string
  length?: number
  trackers: string[]
  webSeeds: string[]
}

export function formatMagnet (m: Magnet): string {
  const parts = [`xt=urn:btih:${m.infoHash}`]
  if (m.name !== undefined) parts.push(`dn=${encodeURIComponent(m.name)}`)
  if (m.length !== undefined) parts.push(`xl=${m.length}`)
  for (const t of m.trackers) parts.push(`tr=${encodeURIComponent(t)}`)
  for (const w of m.webSeeds) parts.push(`ws=${encodeURIComponent(w)}`)
  return `magnet:?${parts.join('&')}`
}

/**
 * The magnet in `url`; undefined when it names no BitTorrent content (a `magnet:` link with only
 * other `xt` kinds, e.g. `urn:sha1:` or `urn:tree:tiger:`); FormatError when it is malformed.
 */
export function parseMagnet (url: string): Magnet | undefined {
  if (!url.startsWith('magnet:?')) throw new FormatError(`not a magnet link: '${url.slice(0, 80)}'`)
  let params: URLSearchParams
  try {
    params = new URLSearchParams(url.slice('magnet:?'.length))
  } catch {
    throw new FormatError(`malformed magnet link: '${url.slice(0, 80)}'`)
  }
  const btih = params.getAll('xt').filter(x => x.toLowerCase().startsWith('urn:btih:'))
  if (btih.length === 0) return undefined
  const infoHash = normalizeInfoHash(btih[0]!.slice('urn:btih:'.length))
  const magnet: Magnet = { infoHash, trackers: params.getAll('tr'), webSeeds: params.getAll('ws') }
  const name = params.get('dn')
  if (name !== null) magnet.name = name
  const xl = params.get('xl')
  if (xl !== null) {
    if (!/^\d{1,15}$/.test(xl)) throw new FormatError(`magnet link: xl must be a byte count, got '${xl}'`)
    magnet.length = Number(xl)
  }
  return magnet
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

/** Hex (40) or base32 (32) info hash → 40 lower-case hex digits. */
function normalizeInfoHash (text: string): string {
  if (/^[0-9a-fA-F]{40}$/.test(text)) return text.toLowerCase()
  if (/^[a-zA-Z2-7]{32}$/.test(text)) {
    let bits = 0
    let acc = 0
    const out: number[] = []
    for (const c of text.toLowerCase()) {
      acc = (acc << 5) | BASE32.indexOf(c)
      bits += 5
      if (bits >= 8) { out.push((acc >> (bits - 8)) & 0xff); bits -= 8 }
    }
    return Buffer.from(out).toString('hex')
  }
  throw new FormatError(`magnet link: '${text}' is not a BitTorrent v1 info hash`)
}
