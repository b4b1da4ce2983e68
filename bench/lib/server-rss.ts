/**
 * Peak RSS of `narswarm serve` as `npm start` runs it (compiled to dist/ first), while a NAR of
 * `gib` GiB goes through its chunk store: relayed from an upstream (verified, spooled, ingested),
 * then, with the upstream stopped, served again from the store. The upstream streams bigNar's
 * bytes from this process (test/helpers/streamed-nar-server.ts).
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NixHash } from '../../src/nix/hash.ts'
import { makeStorePath } from '../../src/nix/store-path.ts'
import { startStreamedNarServer } from '../../test/helpers/streamed-nar-server.ts'
import { bigNar } from './big-nar.ts'
import { curlDownload } from './measure.ts'
import { procStatusKb } from './narswarm.ts'
import { freePort, runCommand, sleep, spawnTracked, stopTracked, waitForHttp } from './procs.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export interface ServerRss { idleMiB: number, relayPeakMiB: number, peakMiB: number, relayMiBs: number, storeMiBs: number }

export async function serverRss (stateDir: string, gib: number): Promise<ServerRss> {
  await runCommand(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json', '--noCheck'], { cwd: ROOT })
  const nar = await bigNar(gib)
  const storePath = makeStorePath('output:out', NixHash.of('sha256', new TextEncoder().encode(`big${gib}`)), 'big')
  const upstream = await startStreamedNarServer({ storePath, narHash: nar.narHash, narSize: nar.size, body: nar.body })
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const proc = spawnTracked('narswarm (compiled)', process.execPath, ['--disable-warning=ExperimentalWarning', join(ROOT, 'dist/cli/main.js'), 'serve',
    '--listen', `127.0.0.1:${port}`, '--state-dir', stateDir, '--log-level', 'warn', '--peer-listen', 'off', '--discovery', 'off',
    '--cache-size', `${2 * gib}GiB`, '--upstream', upstream.upstream])
  const mib = (field: 'VmHWM' | 'VmRSS'): number => (procStatusKb(proc.child.pid!, field) ?? 0) / 1024
  try {
    await waitForHttp(`${url}/nix-cache-info`, proc)
    const narUrl = /^URL: (.*)$/m.exec(await (await fetch(`${url}/${upstream.hashPart}.narinfo`)).text())![1]!
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
    const fromStore = await curlDownload(`${url}/${narUrl}`, nar.size)
    return { idleMiB, relayPeakMiB, peakMiB: mib('VmHWM'), relayMiBs: relay.mibPerSec, storeMiBs: fromStore.mibPerSec }
  } finally {
    await stopTracked(proc, 15_000)
    upstream.close()
  }
}
