/**
 * Interop with a real BitTorrent client from Debian, aria2c, on 127.0.0.1 with a tracker started
 * here (DHT, local discovery and peer exchange off on both sides): aria2c downloads a NAR that
 * narswarm seeds, from narswarm's own magnet link; and narswarm downloads a NAR that aria2c seeds.
 * Either way the bytes must match the NarHash. And mktorrent, given the same piece length, builds
 * the same info hash as narswarm (the torrent format is part of the index format). Each is skipped,
 * with the reason printed, where the tool is missing.
 */
import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../src/log.ts'
import { NixHash } from '../../src/nix/hash.ts'
import { plugin, type TorrentBackend } from '../../src/backend/torrent/index.ts'
import { formatMagnet } from '../../src/backend/torrent/magnet.ts'
import { infoHashOf, parseTorrentFile, PieceHasher, torrentFile } from '../../src/backend/torrent/metainfo.ts'
import { freePort } from '../helpers/net.ts'
import { startTracker, type Tracker } from '../helpers/torrent-tracker.ts'

const version = spawnSync('aria2c', ['--version'], { encoding: 'utf8' })
const skip = version.status === 0 ? false : 'aria2c is not installed (apt-get install aria2)'
if (skip !== false) console.log(`# skipping aria2c interop: ${skip}`)

const mktorrentSkip = spawnSync('mktorrent', ['-h'], { encoding: 'utf8' }).error === undefined ? false : 'mktorrent is not installed (apt-get install mktorrent)'
if (mktorrentSkip !== false) console.log(`# skipping mktorrent check: ${mktorrentSkip}`)

const root = await mkdtemp(join(tmpdir(), 'narswarm-aria2-'))
let tracker: Tracker | undefined
const children: ChildProcess[] = []
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  await tracker?.close()
  await rm(root, { recursive: true, force: true })
})

/** aria2c with every public-network feature off. */
function aria2cArgs (port: number): string[] {
  return ['--enable-dht=false', '--enable-dht6=false', '--bt-enable-lpd=false', '--enable-peer-exchange=false',
    `--listen-port=${port}`, '--file-allocation=none', '--summary-interval=0', '--console-log-level=warn', '--bt-stop-timeout=60']
}

async function run (args: string[]): Promise<void> {
  const child = spawn('aria2c', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  if (code !== 0) throw new Error(`aria2c exited with ${code}: ${output.slice(-2000)}`)
}

async function open (): Promise<TorrentBackend> {
  const spec = `torrent:?dht=false&lsd=false&pex=false&utp=false&port=0&metadata-timeout=30s&stall-timeout=30s&tracker=${encodeURIComponent(tracker!.announce)}`
  return await plugin.create(plugin.parse(new URL(spec)), { log: silentLogger(), stateDir: await mkdtemp(join(root, 'node-')) }) as TorrentBackend
}

describe('torrent interop with aria2c', { skip }, () => {
  it('aria2c downloads a NAR that narswarm seeds, from narswarm\'s magnet link', async () => {
    tracker ??= await startTracker()
    const bytes = randomBytes(3 * (1 << 20) + 777)
    const narHash = NixHash.of('sha256', bytes)
    const seeder = await open()
    try {
      const locator = await seeder.publish({ narHash, narSize: bytes.length, body: (async function * () { yield bytes })() })
      const out = join(root, 'aria2c-out')
      await run([...aria2cArgs(await freePort()), '--seed-time=0', `--dir=${out}`, locator.url])
      const got = await readFile(join(out, `${narHash.toNix32()}.nar`))
      assert.ok(NixHash.of('sha256', got).equals(narHash), 'the bytes aria2c wrote match the NarHash')
    } finally { await seeder.close() }
  })

  it('narswarm downloads a NAR that aria2c seeds', async () => {
    tracker ??= await startTracker()
    const bytes = randomBytes(5 * (1 << 20) + 3)
    const narHash = NixHash.of('sha256', bytes)
    const name = `${narHash.toNix32()}.nar`
    const dir = join(root, 'aria2c-seed')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, name), bytes)
    const hasher = new PieceHasher(1 << 20)
    hasher.update(bytes)
    const info = { name, length: bytes.length, pieceLength: 1 << 20, pieces: hasher.finish() }
    await writeFile(join(dir, 'nar.torrent'), torrentFile(info, [tracker.announce], []))
    // -V: aria2c checks the file against the torrent, then seeds it until it is stopped.
    const seeding = run([...aria2cArgs(await freePort()), '-V', '--seed-ratio=0.0', '--seed-time=5', `--dir=${dir}`, join(dir, 'nar.torrent')]).catch(() => {})
    const leecher = await open()
    try {
      const magnet = formatMagnet({ infoHash: infoHashOf(info), name, length: bytes.length, trackers: [tracker.announce], webSeeds: [] })
      const source = await leecher.open({ url: magnet, compression: 'none' })
      const parts: Uint8Array[] = []
      for await (const c of source!.body) parts.push(c)
      assert.ok(NixHash.of('sha256', Buffer.concat(parts)).equals(narHash), 'the bytes narswarm got from aria2c match the NarHash')
      assert.equal(leecher.seeding, 1)
    } finally {
      await leecher.close()
      for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
      await seeding
    }
  })
})

describe('torrent format interop with mktorrent', { skip: mktorrentSkip }, () => {
  it('mktorrent -l 20 gives the info hash narswarm publishes', async () => {
    const bytes = randomBytes(2 * (1 << 20) + 4321)
    const narHash = NixHash.of('sha256', bytes)
    const name = `${narHash.toNix32()}.nar`
    const dir = join(root, 'mktorrent')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, name), bytes)
    const r = spawnSync('mktorrent', ['-l', '20', '-a', 'http://127.0.0.1:1/announce', '-o', join(dir, 'm.torrent'), join(dir, name)], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    const seeder = await plugin.create(plugin.parse(new URL('torrent:?dht=false&lsd=false&pex=false&utp=false&port=0')), { log: silentLogger(), stateDir: join(dir, 'state') }) as TorrentBackend
    try {
      const locator = await seeder.publish({ narHash, narSize: bytes.length, body: (async function * () { yield bytes })() })
      assert.equal(locator.url.slice('magnet:?xt=urn:btih:'.length, 'magnet:?xt=urn:btih:'.length + 40), parseTorrentFile(await readFile(join(dir, 'm.torrent'))).infoHash)
    } finally { await seeder.close() }
  })
})
