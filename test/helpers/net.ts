/** Ports for test and benchmark servers: only ever on 127.0.0.1. */
import { connect, createServer } from 'node:net'

/** A port that was free a moment ago on 127.0.0.1 (also used as a "dead" address: nothing listens). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Resolves once something accepts connections on 127.0.0.1:`port` (a server another process starts); throws after `timeout` ms. */
export async function waitForPort (port: number, timeout = 10_000): Promise<void> {
  const until = Date.now() + timeout
  for (;;) {
    const open = await new Promise<boolean>(resolve => {
      const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (open) return
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeout} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}
