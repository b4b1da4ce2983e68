/**
 * The serving half of the IPFS trustless gateway protocol, over a node's own blocks: `GET
 * /ipfs/<cid>` answered as a raw block (`application/vnd.ipld.raw`) or as a CAR stream
 * (`application/vnd.ipld.car`) of the file's DAG in depth-first order. Nothing is fetched from the
 * network to answer: a missing root is a 404, and a CAR simply ends where the node's blocks end
 * (the client checks what it got).
 *
 * The CAR can be limited to the blocks needed for a byte range of the file (`dag-scope=entity`
 * with `entity-bytes=from:to`, IPFS IPIP-402): the root, the interior nodes on the way, and the
 * leaves that overlap the range. narswarm's own fetcher uses this to resume after a gap, and to
 * start after the chunks it already has. Blocks are sent once each unless the client asks for
 * `dups=y`. Only trustless answers are given; anything else is a 406 or a 400, as the
 * specification says.
 */
import { CID } from 'multiformats/cid'
import { carHeader, carSection } from './car.ts'
import { decodeFileNode, placedPieces, type FileRoot } from './dag-reader.ts'
import { RAW } from './locator.ts'

export const RAW_TYPE = 'application/vnd.ipld.raw'
export const CAR_TYPE = 'application/vnd.ipld.car'

/**
 * The request for the CAR of the blocks a reader of bytes `from` to `to` (inclusive; undefined: to
 * the end) of `root`'s file needs: a path relative to the gateway's root, and its Accept header.
 */
export function carRequest (root: CID, range: { from: number, to?: number }, dups: boolean): { path: string, accept: string } {
  return {
    path: `ipfs/${root.toString()}?format=car&dag-scope=entity&entity-bytes=${range.from}:${range.to ?? '*'}`,
    accept: `${CAR_TYPE}; version=1; order=dfs; dups=${dups ? 'y' : 'n'}`
  }
}

/** A block of this node's own store, or undefined; never a network fetch. */
export type LocalBlock = (cid: CID) => Promise<Uint8Array | undefined>

export interface GatewayAnswer {
  status: number
  headers: Record<string, string>
  body?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>
}

/** The inclusive byte range of a file a CAR answer covers. */
interface Range { from: number, to: number }

/** Answers one request (`url` is path and query) from `local`. */
export async function answerGatewayRequest (method: string, url: URL, accept: string | null, local: LocalBlock): Promise<GatewayAnswer> {
  if (method !== 'GET' && method !== 'HEAD') return plain(405, 'only GET and HEAD')
  const m = /^\/ipfs\/([A-Za-z0-9]+)\/?$/.exec(url.pathname)
  if (m === null) return plain(400, 'expected /ipfs/<cid>; paths inside a CID are not served')
  let cid: CID
  try { cid = CID.parse(m[1]!) } catch { return plain(400, 'not a CID') }
  const format = chooseFormat(url.searchParams.get('format'), accept)
  if (format === undefined) return plain(406, `only ${RAW_TYPE} and ${CAR_TYPE} are served`)
  const root = await local(cid)
  if (root === undefined) return plain(404, 'block not here')
  const common = { 'cache-control': 'public, max-age=29030400, immutable', 'x-content-type-options': 'nosniff', etag: `"${cid.toString()}.${format.kind}"` }
  if (format.kind === 'raw') {
    return { status: 200, headers: { ...common, 'content-type': RAW_TYPE, 'content-length': String(root.length) }, body: method === 'HEAD' ? undefined : [root] }
  }
  const scope = url.searchParams.get('dag-scope') ?? 'all'
  if (scope !== 'all' && scope !== 'entity' && scope !== 'block') return plain(400, `unknown dag-scope ${scope}`)
  let node: FileRoot
  try { node = decodeFileNode(cid, root) } catch { return plain(501, 'only UnixFS files and raw blocks are served as CAR') }
  let range: Range | undefined = { from: 0, to: Number.MAX_SAFE_INTEGER }
  if (scope === 'block') range = undefined
  const bytes = url.searchParams.get('entity-bytes')
  if (bytes !== null) {
    if (scope !== 'entity') return plain(400, 'entity-bytes needs dag-scope=entity')
    const parsed = parseEntityBytes(bytes, node.size)
    if (parsed === undefined) return plain(400, `bad entity-bytes ${bytes}`)
    range = parsed
  }
  const type = `${CAR_TYPE}; version=1; order=dfs; dups=${format.dups ? 'y' : 'n'}`
  const body = method === 'HEAD' ? undefined : carBody(cid, root, node, range, format.dups, local)
  return { status: 200, headers: { ...common, 'content-type': type }, body }
}

function plain (status: number, text: string): GatewayAnswer {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: [Buffer.from(`${text}\n`)] }
}

/** `?format=` wins over `Accept`; a CAR's `dups` comes from Accept's parameters. */
function chooseFormat (format: string | null, accept: string | null): { kind: 'raw' } | { kind: 'car', dups: boolean } | undefined {
  const types = (accept ?? '').split(',').map(t => t.trim().toLowerCase())
  const car = types.find(t => t.startsWith(CAR_TYPE))
  const dups = car !== undefined && /;\s*dups=y\b/.test(car)
  if (format === 'raw') return { kind: 'raw' }
  if (format === 'car') return { kind: 'car', dups }
  if (format !== null) return undefined
  for (const t of types) {
    if (t.startsWith(RAW_TYPE)) return { kind: 'raw' }
    if (t.startsWith(CAR_TYPE)) return { kind: 'car', dups }
  }
  return undefined
}

/** `from:to`, inclusive, `to` may be `*`; negative values count back from the end. */
export function parseEntityBytes (text: string, size: number): Range | undefined {
  const m = /^(-?\d+):(-?\d+|\*)$/.exec(text)
  if (m === null) return undefined
  const at = (v: number): number => v < 0 ? Math.max(0, size + v) : v
  const from = at(Number(m[1]))
  const to = m[2] === '*' ? Math.max(size - 1, 0) : at(Number(m[2]))
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || to < from) return undefined
  return { from, to }
}

async function * carBody (cid: CID, root: Uint8Array, node: FileRoot, range: Range | undefined, dups: boolean, local: LocalBlock): AsyncGenerator<Uint8Array> {
  yield carHeader(cid)
  const seen = new Set<string>()
  for await (const block of dagBlocks(cid, root, 0, range, local, node)) {
    const key = block.cid.toString()
    if (!dups && seen.has(key)) continue
    seen.add(key)
    yield * carSection(block)
  }
}

/**
 * The blocks of the DAG under `cid` (whose bytes are `bytes`, decoded: `node`, starting at file
 * offset `offset`) that a reader of `range` needs, depth-first. Ends early, without error, at a
 * block this node does not have.
 */
async function * dagBlocks (cid: CID, bytes: Uint8Array, offset: number, range: Range | undefined, local: LocalBlock, node?: FileRoot): AsyncGenerator<{ cid: CID, bytes: Uint8Array }, boolean> {
  yield { cid, bytes }
  if (range === undefined || cid.code === RAW) return true
  const wanted = placedPieces(node ?? decodeFileNode(cid, bytes), offset).flatMap(piece => {
    if ('bytes' in piece) return []
    const end = piece.offset + piece.size - 1
    return Math.max(end, piece.offset) < range.from || piece.offset > range.to ? [] : [piece]
  })
  // Children are read READ_AHEAD at a time, so disk reads overlap with sending.
  const reads: Array<Promise<Uint8Array | undefined>> = []
  const readNext = (): void => {
    const next = wanted[reads.length]
    if (next !== undefined) reads.push(local(next.cid).catch(() => undefined))
  }
  for (let i = 0; i < READ_AHEAD; i++) readNext()
  for (let i = 0; i < wanted.length; i++) {
    const child = await reads[i]!
    reads[i] = DONE
    readNext()
    if (child === undefined) return false
    if (!(yield * dagBlocks(wanted[i]!.cid, child, wanted[i]!.offset, range, local))) return false
  }
  return true
}

const READ_AHEAD = 8
const DONE = Promise.resolve(undefined)
