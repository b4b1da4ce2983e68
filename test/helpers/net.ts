/** Ports for test and benchmark servers: only ever on 127.0.0.1. */
import { createServer } from 'node:net'

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
