/**
 * NARs sent as zstd, to clients that decode it (`decodesZstd`). The narinfo offers `.nar.zst` only
 * while the chunk store holds the NAR: its compressed chunks then go out as they are stored, so
 * narswarm neither decompresses nor re-hashes the NAR, and the client, which checks the NarHash
 * itself, decompresses on its own core; a raw chunk goes out in a raw frame. The URL stays valid
 * for as long as the client keeps the narinfo: a NAR the store no longer holds (evicted, or a
 * chunk found corrupt halfway) comes from its sources like any NAR, wrapped in raw frames. Such a
 * response cannot be resumed (its bytes depend on where they came from), so it has no
 * Accept-Ranges, and a failed chunk is replaced in the same response rather than cut.
 */
import { IntegrityError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { rawFrames } from '../nix/zstd-frames.ts'
import type { NarReader } from './shared-nar.ts'
import type { NarHandle } from './substituter.ts'

/**
 * Nix from 2.4 on, and Lix (which reports itself as Nix 2.90 and later), decode zstd: through
 * libarchive, which reads concatenated frames, up to 2.21; through the named filter since 2.22.
 * Their curl User-Agent is `curl/<version> Nix/<version>` (Lix: `curl/<version>Nix/<version>`).
 * Any other client gets the NAR uncompressed.
 */
export function decodesZstd (userAgent: string | undefined): boolean {
  const m = /Nix\/(\d+)\.(\d+)/.exec(userAgent ?? '')
  if (m === null) return false
  const [major, minor] = [Number(m[1]), Number(m[2])]
  return major > 2 || (major === 2 && minor >= 4)
}

/**
 * The NAR as one zstd stream: from the store when it holds it, else (or from the first chunk that
 * fails) from `reopen`, the NAR found again once the store dropped it. Undefined when no source has it.
 */
export async function openZstd (nar: NarHandle, reopen: () => Promise<NarHandle | undefined>, log: Logger, signal: AbortSignal): Promise<NarReader | undefined> {
  const size = nar.identity.narSize
  const frames = nar.frames?.(signal)
  if (frames === undefined) {
    const reader = await nar.open(0, size, signal)
    return reader === undefined ? undefined : { ...reader, body: rawFrames(reader.body) }
  }
  let source = 'store'
  let rest: NarReader | undefined
  const body = async function * (): AsyncGenerator<Uint8Array> {
    let offset = 0
    try {
      for await (const chunk of frames) {
        yield * chunk.frames
        offset += chunk.size
      }
      return
    } catch (err) {
      if (!(err instanceof IntegrityError) || signal.aborted) throw err
      log.warn({ narHash: nar.identity.narHash.toNix32(), offset, err: err.message }, 'the store lost a NAR while sending it: the rest comes from its sources')
    }
    const again = await reopen()
    rest = again === undefined ? undefined : await again.open(offset, size, signal)
    if (rest === undefined) throw new IntegrityError(`NAR ${nar.identity.narHash.toNix32()}: the store lost it at byte ${offset} and no source has it`)
    source = rest.source()
    yield * rawFrames(rest.body)
    source = rest.source()
  }
  return { body: body(), source: () => source, close: () => rest?.close() }
}
