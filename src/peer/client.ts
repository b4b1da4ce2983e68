/**
 * The peer protocol's client: one call per request of docs/peer-protocol.md, each with tight
 * timeouts (connect 250 ms by default; answers and stalls as the caller says), so a dead or slow
 * peer costs one short timeout. Absence (404) is a value; anything else a peer does wrong throws
 * UpstreamError (FormatError for a malformed answer), which the caller scores against the peer.
 */
import { Agent, request, type Dispatcher } from 'undici'
import { FormatError, UpstreamError } from '../errors.ts'
import type { ChunkId, Manifest } from '../chunk/types.ts'
import type { NixHash } from '../nix/hash.ts'
import { ByteReader } from '../util/byte-reader.ts'
import { describeHttpError, isTimeout, readBody } from '../util/http-client.ts'
import type { GroupKey } from './auth.ts'
import { decodeChunkFile, ZSTD } from '../chunk/chunk-file.ts'
import { ABSENT_FRAME, CHUNKS_TYPE, decodeBitmap, decodeManifest, encodeIds, manifestLimit, PEER_PATH, PROTOCOL_VERSION, STORED_CHUNKS_TYPE } from './protocol.ts'

export interface PeerClientInit {
  groupKey?: GroupKey
  connectTimeout?: number
  /** Connections per peer; more requests wait for one. */
  connections?: number
}

export interface RequestTimeouts {
  /** Until the answer's headers (ms). */
  answer: number
  /** Longest silence in the middle of a body (ms): a stall. */
  stall: number
}

export interface PeerInfo { protocol: number, nodeId?: string, cdcId?: string }

/** A chunk from a peer: its bytes (not yet checked against the id), and the zstd frame it came in. */
export interface PeerChunk {
  bytes: Uint8Array
  compressed?: Uint8Array
  /** Bytes it took on the wire. */
  wire: number
}

const NARINFO_LIMIT = 64 << 10

export class PeerClient {
  readonly #dispatcher: Dispatcher
  readonly #groupKey: GroupKey | undefined

  constructor (init: PeerClientInit = {}) {
    this.#groupKey = init.groupKey
    this.#dispatcher = new Agent({ connect: { timeout: init.connectTimeout ?? 250 }, connections: init.connections ?? 8, keepAliveTimeout: 30_000 })
  }

  async info (peer: string, signal?: AbortSignal): Promise<PeerInfo> {
    const body = await this.#get(peer, '/info', { answer: 1_000, stall: 1_000 }, 4096, signal)
    if (body === undefined) throw new UpstreamError(peer, 'no peer protocol v1 here (404)')
    let info: PeerInfo
    try {
      info = JSON.parse(body.toString('utf8')) as PeerInfo
    } catch {
      throw new FormatError(`${peer}: info is not JSON`)
    }
    if (info.protocol !== PROTOCOL_VERSION) throw new UpstreamError(peer, `speaks peer protocol ${String(info.protocol)}`)
    return info
  }

  async narInfo (peer: string, hashPart: string, timeouts: RequestTimeouts, signal?: AbortSignal): Promise<string | undefined> {
    return (await this.#get(peer, `/narinfo/${hashPart}`, timeouts, NARINFO_LIMIT, signal))?.toString('utf8')
  }

  /** The peer's manifest of a NAR of `narSize` bytes, undefined when it does not share it. */
  async manifest (peer: string, narHash: NixHash, narSize: number, timeouts: RequestTimeouts, signal?: AbortSignal): Promise<Manifest | undefined> {
    const body = await this.#get(peer, `/manifest/${narHash.toNix32()}`, timeouts, manifestLimit(narSize), signal)
    return body === undefined ? undefined : decodeManifest(body)
  }

  /** Which of `ids` the peer shares. */
  async have (peer: string, ids: readonly ChunkId[], timeouts: RequestTimeouts, signal?: AbortSignal): Promise<boolean[]> {
    const { body } = await this.#post(peer, '/have', encodeIds(ids), timeouts, signal)
    const bitmap = await this.#read(peer, body, Math.ceil(ids.length / 8))
    if (bitmap === undefined) throw new FormatError(`${peer}: have answer too long`)
    return decodeBitmap(bitmap, ids.length)
  }

  /**
   * The chunks `ids` (of the sizes a manifest gives), each yielded as it arrives, in order;
   * undefined for one the peer does not have. Chunk files as the peer stores them are asked for
   * and decoded here (a compressed one is kept for the store). Throws FormatError for a chunk of
   * another size or a chunk file that is not what this store would write.
   */
  async * chunks (peer: string, ids: readonly ChunkId[], sizes: readonly number[], timeouts: RequestTimeouts, signal?: AbortSignal): AsyncGenerator<PeerChunk | undefined> {
    const response = await this.#post(peer, '/chunks', encodeIds(ids), timeouts, signal, { accept: `${STORED_CHUNKS_TYPE}, ${CHUNKS_TYPE};q=0.5` })
    const stored = response.headers['content-type'] === STORED_CHUNKS_TYPE
    const reader = new ByteReader(response.body)
    try {
      for (let i = 0; i < ids.length; i++) {
        const header = await reader.read(4)
        if (header === undefined) throw new UpstreamError(peer, `chunks answer ended after ${i} of ${ids.length}`)
        const length = Buffer.from(header).readUInt32BE(0)
        if (length === ABSENT_FRAME) { yield undefined; continue }
        const size = sizes[i]!
        if (stored ? length > size + 1 : length !== size) throw new FormatError(`${peer}: chunk ${i} is ${length} bytes, the manifest says ${size}`)
        const bytes = await reader.read(length)
        if (bytes === undefined) throw new UpstreamError(peer, `chunks answer cut in chunk ${i}`)
        if (!stored) { yield { bytes, wire: length }; continue }
        let chunk: Uint8Array
        try {
          chunk = decodeChunkFile(bytes, size, true)
        } catch (err) {
          throw new FormatError(`${peer}: chunk ${i}: ${(err as Error).message}`)
        }
        yield bytes[0] === ZSTD ? { bytes: chunk, compressed: bytes.subarray(1), wire: length } : { bytes: chunk, wire: length }
      }
    } catch (err) {
      throw this.#failure(peer, err)
    } finally {
      response.body.destroy()
    }
  }

  async close (): Promise<void> {
    await this.#dispatcher.close()
  }

  async #get (peer: string, path: string, timeouts: RequestTimeouts, limit: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    const fullPath = `${PEER_PATH}${path}`
    let response: Dispatcher.ResponseData
    try {
      response = await request(`${peer}${fullPath}`, {
        dispatcher: this.#dispatcher, method: 'GET', headersTimeout: timeouts.answer, bodyTimeout: timeouts.stall,
        signal: signal ?? null, headers: this.#auth('GET', fullPath)
      })
    } catch (err) {
      throw this.#failure(peer, err)
    }
    if (response.statusCode === 404) { response.body.resume(); return undefined }
    this.#checkStatus(peer, response)
    const body = await this.#read(peer, response.body, limit)
    if (body === undefined) throw new FormatError(`${peer}: ${path} answer over ${limit} bytes`)
    return body
  }

  async #post (peer: string, path: string, payload: Buffer, timeouts: RequestTimeouts, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<Dispatcher.ResponseData> {
    const fullPath = `${PEER_PATH}${path}`
    let response: Dispatcher.ResponseData
    try {
      response = await request(`${peer}${fullPath}`, {
        dispatcher: this.#dispatcher, method: 'POST', body: payload, headersTimeout: timeouts.answer, bodyTimeout: timeouts.stall,
        signal: signal ?? null, headers: { 'content-type': 'application/octet-stream', ...headers, ...this.#auth('POST', fullPath, payload) }
      })
    } catch (err) {
      throw this.#failure(peer, err)
    }
    this.#checkStatus(peer, response)
    return response
  }

  async #read (peer: string, body: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer | undefined> {
    try {
      return await readBody(body, limit)
    } catch (err) {
      throw this.#failure(peer, err)
    }
  }

  #checkStatus (peer: string, response: Dispatcher.ResponseData): void {
    if (response.statusCode === 200) return
    response.body.resume()
    throw new UpstreamError(peer, `answered ${response.statusCode}`, { status: response.statusCode })
  }

  #auth (method: string, path: string, body?: Uint8Array): Record<string, string> {
    return this.#groupKey === undefined ? {} : { authorization: this.#groupKey.authorization(method, path, body) }
  }

  #failure (peer: string, err: unknown): Error {
    if (err instanceof UpstreamError || err instanceof FormatError) return err
    if ((err as Error).name === 'AbortError') return err as Error
    return new UpstreamError(peer, describeHttpError(err), { timeout: isTimeout(err), cause: err })
  }
}
