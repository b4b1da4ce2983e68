/**
 * The listener's limits on a real narswarm: a client that trickles its headers is cut off, the
 * connection cap refuses newcomers without touching the connections already open, and the request
 * timeout does not cut a NAR that takes longer to answer. The per-address cap needs a non-loopback
 * client: see test/server/remote-client.test.ts.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { startNarswarm, type NarswarmProcess } from '../helpers/narswarm.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { tempDir } from '../helpers/temp.ts'
import { generateSecretKey } from '../../src/nix/signature.ts'

/** Sends one request on `socket` and resolves with the response head and body once both arrived. */
async function exchange (socket: Socket, path: string): Promise<string> {
  let text = ''
  const done = new Promise<string>((resolve, reject) => {
    const onData = (data: Buffer): void => {
      text += data.toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      const length = /content-length: (\d+)/i.exec(text)
      if (end >= 0 && length !== null && text.length >= end + 4 + Number(length[1])) {
        socket.off('data', onData)
        resolve(text)
      }
    }
    socket.on('data', onData)
    socket.once('close', () => reject(new Error(`connection closed; got ${JSON.stringify(text)}`)))
  })
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
  return await done
}

async function open (url: string): Promise<Socket> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  // A refused connection is reset: the tests look at 'close' and at what arrived.
  socket.on('error', () => {})
  await once(socket, 'connect')
  return socket
}

describe('server limits', () => {
  const key = generateSecretKey('limits-1')
  const entry = makeEntry('slow-nar')
  let upstream: CacheServer
  let n: NarswarmProcess

  before(async () => {
    const dir = tempDir()
    await writeSignedCache(dir, [entry], key)
    upstream = await startCacheServer(dir)
    n = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${key.public}`,
      '--header-timeout', '500ms', '--request-timeout', '1s', '--max-connections', '4'])
  })
  after(async () => {
    await n.stop()
    await upstream.close()
  })

  test('a client that sends its headers slowly is cut off', async () => {
    const socket = await open(n.url)
    let received = ''
    socket.on('data', d => { received += String(d) })
    socket.write('GET /nix-cache-info HTTP/1.1\r\n')
    // One header byte every 100 ms: never idle, never done.
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write('X') }, 100)
    const timeout = setTimeout(() => socket.destroy(new Error('still open after 10 s')), 10_000)
    try {
      await new Promise(resolve => socket.once('close', resolve))
    } finally {
      clearInterval(trickle)
      clearTimeout(timeout)
    }
    assert.match(received, /^HTTP\/1\.1 408 /, 'closed by narswarm with 408, not by the test')
  })

  test('the connection cap refuses newcomers and leaves open connections alone', async () => {
    const held = await Promise.all([1, 2, 3, 4].map(async () => await open(n.url)))
    try {
      for (const s of held) assert.match(await exchange(s, '/nix-cache-info'), /^HTTP\/1\.1 200 /)
      const excess = await open(n.url)
      let got = ''
      excess.on('data', d => { got += String(d) })
      excess.write('GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n')
      await new Promise(resolve => excess.once('close', resolve))
      assert.equal(got, '', 'the fifth connection is closed without an answer')
      for (const s of held) assert.match(await exchange(s, '/nix-cache-info'), /^HTTP\/1\.1 200 /, 'the four keep working')
      held.pop()!.destroy()
      await new Promise(resolve => setTimeout(resolve, 200))
      const later = await open(n.url)
      held.push(later)
      assert.match(await exchange(later, '/nix-cache-info'), /^HTTP\/1\.1 200 /, 'a freed slot is usable again')
    } finally {
      for (const s of held) s.destroy()
    }
    await n.waitForLog(l => l.msg === 'connection refused: too many connections')
  })

  test('the request timeout does not cut an answer that takes longer', async () => {
    await new Promise(resolve => setTimeout(resolve, 200))
    upstream.faults.push({ match: p => p.startsWith('/nar/'), fault: { kind: 'delay', ms: 1500 } })
    assert.equal((await fetch(`${n.url}/${entry.hashPart}.narinfo`)).status, 200)
    const nar = await fetch(`${n.url}/nar/${entry.narHash.toNix32()}.nar`)
    assert.equal(nar.status, 200)
    assert.ok(Buffer.from(await nar.arrayBuffer()).equals(entry.nar), 'the whole NAR, 1.5 s after a 1 s request timeout')
  })
})
