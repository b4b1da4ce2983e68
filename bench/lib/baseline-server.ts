/**
 * The smallest Node servers that do narswarm's two jobs, as a yardstick for what Node itself costs
 * on this machine (run pinned like narswarm, by bench/run.ts):
 *
 *   node bench/lib/baseline-server.ts narinfo PORT DIR
 *       GET /<hash>.narinfo from a Map of the files in DIR, preloaded (same headers as narswarm).
 *   node bench/lib/baseline-server.ts relay PORT UPSTREAM
 *       GET /nar/<x>.nar relays UPSTREAM/nar/<x>.nar through undici's request (the client narswarm
 *       uses) and sha256, writing each chunk as it comes with backpressure; no async generators.
 *
 * The difference to narswarm is what narswarm's own code (routing, the narinfo cache, the generator
 * chain of decompress → verify → guard → pipeline) costs on top.
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { Agent, request } from 'undici'

const [mode, portText, arg] = process.argv.slice(2)
const port = Number(portText)
if ((mode !== 'narinfo' && mode !== 'relay') || !Number.isInteger(port) || arg === undefined) {
  process.stderr.write('usage: baseline-server.ts narinfo|relay PORT DIR|UPSTREAM\n')
  process.exit(2)
}

const notFound = Buffer.from('404 Not Found\n')

const server = mode === 'narinfo' ? narinfoServer(arg) : relayServer(arg)
server.listen(port, '127.0.0.1')
process.once('SIGTERM', () => { server.closeAllConnections(); server.close() })

function narinfoServer (dir: string): ReturnType<typeof createServer> {
  const bodies = new Map<string, Buffer>()
  for (const f of readdirSync(dir)) if (f.endsWith('.narinfo')) bodies.set(`/${f}`, readFileSync(join(dir, f)))
  bodies.set('/nix-cache-info', readFileSync(join(dir, 'nix-cache-info')))
  return createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
    const body = bodies.get(req.url ?? '')
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(notFound.length), 'cache-control': 'no-store' })
      res.end(notFound)
      return
    }
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': String(body.length), 'cache-control': 'public, max-age=3600' })
    res.end(body)
  })
}

function relayServer (upstream: string): ReturnType<typeof createServer> {
  const dispatcher = new Agent({ connections: 32, keepAliveTimeout: 30_000 })
  return createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
    const url = req.url ?? ''
    if (url === '/nix-cache-info') { res.end('StoreDir: /nix/store\n'); return }
    if (!url.startsWith('/nar/')) { res.writeHead(404).end(); return }
    void (async () => {
      const up = await request(`${upstream}${url}`, { dispatcher })
      if (up.statusCode !== 200) { await up.body.dump(); res.writeHead(502).end(); return }
      res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': String(up.headers['content-length']) })
      const hash = createHash('sha256')
      for await (const chunk of up.body) {
        hash.update(chunk as Buffer)
        if (!res.write(chunk)) await once(res, 'drain')
      }
      hash.digest()
      res.end()
    })().catch(() => res.destroy())
  })
}
