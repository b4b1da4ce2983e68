/**
 * An upstream binary cache holding one NAR too large to keep anywhere: its signed narinfo, and the
 * NAR made by `body` as it is sent (with back-pressure), so neither memory nor disk ever holds it.
 * For the large-NAR test and the memory bench.
 */
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'

export interface StreamedNar {
  storePath: string
  narHash: NixHash
  narSize: number
  /** The NAR's bytes, afresh at each call. */
  body: () => AsyncIterable<Uint8Array>
}

export interface StreamedNarServer {
  /** With `?trusted-public-keys=` of the key that signed the narinfo: an `--upstream` value. */
  upstream: string
  hashPart: string
  /** Stops it, cutting transfers in progress; idempotent. */
  close: () => void
}

export async function startStreamedNarServer (nar: StreamedNar): Promise<StreamedNarServer> {
  const key = generateSecretKey('streamed-1')
  const hashPart = nar.storePath.slice(11, 43)
  const unsigned = NarInfo.build({ storePath: nar.storePath, url: 'nar/streamed.nar', compression: 'none', narHash: nar.narHash, narSize: nar.narSize, references: [] })
  const narInfo = signNarInfo(unsigned, key.secret).toString()
  const server = createServer((req, res) => {
    if (req.url === `/${hashPart}.narinfo`) { res.end(narInfo); return }
    if (req.url !== '/nar/streamed.nar') { res.writeHead(404).end(); return }
    res.writeHead(200, { 'content-length': String(nar.narSize) })
    void (async () => {
      for await (const piece of nar.body()) if (!res.write(piece)) await once(res, 'drain')
      res.end()
    })().catch(() => res.destroy())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    upstream: `${url}?trusted-public-keys=${key.public}`,
    hashPart,
    close: () => {
      if (!server.listening) return
      server.close()
      server.closeAllConnections()
    }
  }
}
