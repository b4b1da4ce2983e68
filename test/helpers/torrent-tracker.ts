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
