/**
 * Peak RSS of `narswarm serve` as `npm start` runs it (compiled to dist/ first), while a NAR of
 * `gib` GiB goes through its chunk store: relayed from an upstream (verified, spooled, ingested),
 * then, with the upstream stopped, served again from the store. The upstream is a Node server in
 * this process streaming bigNar's bytes, with a signed narinfo.
 */
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { generateSecretKey, signNarInfo } from '../../src/nix/signature.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { bigNar } from './big-nar.ts'
import { curlDownload } from './measure.ts'
import { procStatusKb } from './narswarm.ts'
import { freePort, runCommand, sleep, spawnTracked, stopTracked, waitForHttp } from './procs.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export interface ServerRss { idleMiB: number, relayPeakMiB: number, peakMiB: number, relayMiBs: number, storeMiBs: number }

export async function serverRss (stateDir: string, gib: number): Promise<ServerRss> {
  await runCommand(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json', '--noCheck'], { cwd: ROOT })
  const nar = await bigNar(gib)
  const key = generateSecretKey('bench-rss-1')
  const storePath = makeStorePath('output:out', NixHash.of('sha256', new TextEncoder().encode(`big${gib}`)), 'big')
  const hashPart = storePath.slice(11, 43)
  const unsigned = NarInfo.build({ storePath, url: 'nar/big.nar', compression: 'none', narHash: nar.narHash, narSize: nar.size, references: [] })
  const narInfo = signNarInfo(unsigned, key.secret).toString()
  const upstream = createServer((req, res) => {
    if (req.url === `/${hashPart}.narinfo`) { res.end(narInfo); return }
    if (req.url !== '/nar/big.nar') { res.writeHead(404).end(); return }
    res.writeHead(200, { 'content-length': String(nar.size) })
    void (async () => {
      for await (const piece of nar.body()) if (!res.write(piece)) await once(res, 'drain')
      res.end()
    })().catch(() => res.destroy())
  })
  upstream.listen(0, '127.0.0.1')
  await once(upstream, 'listening')
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const proc = spawnTracked('narswarm (compiled)', process.execPath, ['--disable-warning=ExperimentalWarning', join(ROOT, 'dist/cli/main.js'), 'serve',
    '--listen', `127.0.0.1:${port}`, '--state-dir', stateDir, '--log-level', 'warn', '--peer-listen', 'off', '--discovery', 'off',
    '--cache-size', `${2 * gib}GiB`, '--upstream', `http://127.0.0.1:${(upstream.address() as AddressInfo).port}?trusted-public-keys=${key.public}`])
  const mib = (field: 'VmHWM' | 'VmRSS'): number => (procStatusKb(proc.child.pid!, field) ?? 0) / 1024
  try {
    await waitForHttp(`${url}/nix-cache-info`, proc)
    const narUrl = /^URL: (.*)$/m.exec(await (await fetch(`${url}/${hashPart}.narinfo`)).text())![1]!
    const idleMiB = mib('VmRSS')
    const relay = await curlDownload(`${url}/${narUrl}`, nar.size)
    // The ingest goes on after the last byte was sent; the upstream may go once it is committed.
    for (;;) {
      const status = await (await fetch(`${url}/status.json`)).json() as { store: { nars: number } }
      if (status.store.nars === 1) break
      await sleep(200)
    }
    const relayPeakMiB = mib('VmHWM')
    upstream.close()
    upstream.closeAllConnections()
    const fromStore = await curlDownload(`${url}/${narUrl}`, nar.size)
    return { idleMiB, relayPeakMiB, peakMiB: mib('VmHWM'), relayMiBs: relay.mibPerSec, storeMiBs: fromStore.mibPerSec }
  } finally {
    await stopTracked(proc, 15_000)
    upstream.close()
  }
}
