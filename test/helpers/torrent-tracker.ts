/**
 * A BitTorrent tracker on 127.0.0.1 (bittorrent-tracker, HTTP and UDP), for tests and the bench:
 * the only way peers find each other there, since DHT and local discovery are off. Bound to
 * loopback explicitly for both UDP families (a plain '127.0.0.1' makes the udp6 bind fail).
 */
export interface Tracker {
  /** The HTTP announce URL. */
  announce: string
  close: () => Promise<void>
}

interface TrackerServer {
  listen: (port: number, hosts: Record<string, string>, cb: () => void) => void
  close: (cb: () => void) => void
  on: (event: string, cb: (err: Error) => void) => void
  http: { address: () => { port: number } }
}

export async function startTracker (): Promise<Tracker> {
  const name = 'bittorrent-tracker'
  const { Server } = await import(name) as { Server: new (opts: Record<string, unknown>) => TrackerServer }
  const server = new Server({ udp: true, http: true, ws: false, stats: false, trustProxy: false })
  server.on('error', () => {})
  server.on('warning', () => {})
  await new Promise<void>(resolve => server.listen(0, { http: '127.0.0.1', udp: '127.0.0.1', udp6: '::1' }, resolve))
  return {
    announce: `http://127.0.0.1:${server.http.address().port}/announce`,
    close: async () => await new Promise<void>(resolve => server.close(resolve))
  }
}

/**
 * A tracker, or why the tests that need one skip: only a missing package is a reason to skip; a
 * tracker that is there and fails is a failure.
 */
export async function startTrackerOrSkip (): Promise<{ tracker?: Tracker, skip: string | false }> {
  try {
    return { tracker: await startTracker(), skip: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
    return { skip: `WebTorrent's tracker is not installed: ${(err as Error).message}` }
  }
}

/**
 * A `torrent:` spec for loopback only: no DHT, LSD, PEX, uTP or port mapping, peers found through
 * `tracker` alone, a short wait for them; `extra` (`&k=v…`) overrides any option.
 */
export function loopbackTorrentSpec (tracker: Tracker | undefined, extra = ''): string {
  const options = new URLSearchParams({ dht: 'false', lsd: 'false', pex: 'false', utp: 'false', nat: 'false', port: '0', 'metadata-timeout': '3s', 'stall-timeout': '5s' })
  for (const [k, v] of new URLSearchParams(extra)) options.set(k, v)
  return `torrent:?${options.toString()}&tracker=${encodeURIComponent(tracker?.announce ?? 'http://127.0.0.1:1/announce')}`
}
