/**
 * The bench's binary caches, generated in a temp dir:
 *
 *   plain/  nix-cache-info, N generated narinfos (valid structure, realistic size: references,
 *           deriver, one signature-shaped Sig — not a real signature, so narswarm's upstream uses
 *           require-sigs=false), and one big NAR stored uncompressed (`Compression: none`).
 *   zstd/   nix-cache-info and a narinfo for the same store path whose NAR is a zstd -3 copy of
 *           the big NAR (the same NarHash, so the same sha256 work).
 *
 * The big NAR is a valid NAR of one regular file whose contents are `nix-store --dump` output of
 * real /usr directories (real binaries, libraries, text: realistic compressibility), cut so the
 * NAR is exactly the requested size. Without nix-store, the contents are random data instead.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { encodeNix32 } from '../../src/nix/nix32.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { runCommand, spawnTracked, stopTracked } from './procs.ts'

const MiB = 1 << 20

export interface BigNar {
  hashPart: string
  /** Path of the uncompressed NAR file (served by nginx, hashed for the sha256 ceiling). */
  file: string
  narHash: string
  /** The NarHash as lowercase hex, for comparing with a plain sha256. */
  narHashHex: string
  narSize: number
  /** Where the contents came from, for the report. */
  content: string
  zstdFile: string
  zstdSize: number
}

export interface Fixture {
  root: string
  /** Hash parts of the generated narinfos (not the big NAR's). */
  hashParts: string[]
  /** The narinfo text of each generated hash part, as stored. */
  texts: Map<string, string>
  meanNarInfoBytes: number
  big: BigNar
}

const CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'
const NAMES = ['glibc-2.39', 'gcc-13.2.0-lib', 'bash-5.2p26', 'coreutils-9.4', 'openssl-3.0.13', 'python3-3.11.9',
  'perl-5.38.2', 'zlib-1.3.1', 'libffi-3.4.6', 'ncurses-6.4', 'systemd-255.4', 'util-linux-2.39.3-lib', 'nodejs-20.12.2',
  'hello-2.12.1', 'xz-5.4.6', 'zstd-1.5.6', 'curl-8.7.1', 'sqlite-3.45.3', 'libxml2-2.12.6', 'git-2.44.0']

function nix32 (bytes: number): string { return encodeNix32(randomBytes(bytes)) }

/** Writes N narinfos of realistic shape into `dir`; every one is checked with narswarm's own parser. */
export function writeNarInfos (dir: string, n: number): { hashParts: string[], texts: Map<string, string>, meanBytes: number } {
  const paths = Array.from({ length: n }, (_, i) => `${nix32(20)}-${NAMES[i % NAMES.length]!}${i >= NAMES.length ? `-${i}` : ''}`)
  const texts = new Map<string, string>()
  const hashParts: string[] = []
  let total = 0
  paths.forEach((base, i) => {
    const refCount = i % 13
    const refs = new Set<string>([base])
    for (let k = 0; k < refCount; k++) refs.add(paths[(i * 7 + k * 131 + 1) % n]!)
    const narSize = 1024 + ((i * 2654435761) % (64 * MiB))
    const compressed = Math.floor(narSize * 0.3)
    const text = [
      `StorePath: /nix/store/${base}`,
      `URL: nar/${nix32(32)}.nar.xz`,
      'Compression: xz',
      `FileHash: sha256:${nix32(32)}`,
      `FileSize: ${compressed}`,
      `NarHash: sha256:${nix32(32)}`,
      `NarSize: ${narSize}`,
      `References: ${[...refs].sort().join(' ')}`,
      `Deriver: ${nix32(20)}-${base.slice(33)}.drv`,
      `Sig: cache.example.org-1:${randomBytes(64).toString('base64')}`,
      ''
    ].join('\n')
    NarInfo.parse(text) // throws if the generator ever produces something narswarm would refuse
    const hashPart = base.slice(0, 32)
    writeFileSync(join(dir, `${hashPart}.narinfo`), text)
    texts.set(hashPart, text)
    hashParts.push(hashPart)
    total += text.length
  })
  return { hashParts, texts, meanBytes: total / n }
}

function narString (s: string | Uint8Array): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s) : Buffer.from(s)
  const padded = Buffer.alloc(8 + Math.ceil(bytes.length / 8) * 8)
  padded.writeBigUInt64LE(BigInt(bytes.length), 0)
  bytes.copy(padded, 8)
  return padded
}

function u64 (n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

const DUMP_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/share', '/usr/lib', '/usr/bin']

/**
 * Writes a NAR of exactly `size` bytes (a multiple of 8, ≥ 1 MiB) to `file`: one regular file whose
 * contents are the output of `nix-store --dump` of real /usr directories (random bytes without Nix).
 */
async function writeBigNar (file: string, size: number): Promise<{ hex: string, content: string }> {
  const header = Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents'].map(narString))
  const trailer = narString(')')
  const contentSize = size - header.length - 8 - trailer.length
  if (contentSize <= 0 || contentSize % 8 !== 0) throw new Error(`NAR size ${size} must be a multiple of 8 and larger`)
  const hash = createHash('sha256')
  const out = createWriteStream(file)
  const write = async (chunk: Buffer): Promise<void> => {
    hash.update(chunk)
    if (!out.write(chunk)) await once(out, 'drain')
  }
  await write(header)
  await write(u64(contentSize))
  let remaining = contentSize
  const used: string[] = []
  const haveNix = spawnSync('nix-store', ['--version'], { stdio: 'ignore' }).status === 0
  if (haveNix) {
    for (const dir of DUMP_DIRS) {
      if (remaining === 0) break
      if (!existsSync(dir)) continue
      used.push(dir)
      const dump = spawnTracked('nix-store --dump', 'nix-store', ['--dump', dir], { stdio: ['ignore', 'pipe', 'ignore'] }, false)
      for await (const data of dump.child.stdout!) {
        const chunk = data as Buffer
        const take = chunk.length <= remaining ? chunk : chunk.subarray(0, remaining)
        await write(take)
        remaining -= take.length
        if (remaining === 0) break
      }
      await stopTracked(dump, 1000)
    }
  }
  let content = used.length > 0 ? `nix-store --dump of ${used.join(', ')}` : 'random bytes'
  if (remaining > 0 && used.length > 0) content += ' + random bytes'
  while (remaining > 0) {
    const chunk = randomBytes(Math.min(remaining, MiB))
    await write(chunk)
    remaining -= chunk.length
  }
  await write(trailer)
  out.end()
  await once(out, 'finish')
  return { hex: hash.digest('hex'), content }
}

async function sha256File (file: string): Promise<Buffer> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) hash.update(chunk as Buffer)
  return hash.digest()
}

function narInfoText (fields: { storePath: string, url: string, compression: string, fileHash: string, fileSize: number, narHash: string, narSize: number }): string {
  const text = [
    `StorePath: ${fields.storePath}`,
    `URL: ${fields.url}`,
    `Compression: ${fields.compression}`,
    `FileHash: ${fields.fileHash}`,
    `FileSize: ${fields.fileSize}`,
    `NarHash: ${fields.narHash}`,
    `NarSize: ${fields.narSize}`,
    'References: ',
    ''
  ].join('\n')
  NarInfo.parse(text)
  return text
}

export async function makeFixture (root: string, opts: { narInfos: number, narMiB: number }): Promise<Fixture> {
  const plain = join(root, 'plain')
  const zstd = join(root, 'zstd')
  mkdirSync(join(plain, 'nar'), { recursive: true })
  mkdirSync(join(zstd, 'nar'), { recursive: true })
  writeFileSync(join(plain, 'nix-cache-info'), CACHE_INFO)
  writeFileSync(join(zstd, 'nix-cache-info'), CACHE_INFO)
  const { hashParts, texts, meanBytes } = writeNarInfos(plain, opts.narInfos)

  const size = opts.narMiB * MiB
  const tmpNar = join(root, 'big.nar')
  const { hex, content } = await writeBigNar(tmpNar, size)
  const narHashBytes = Buffer.from(hex, 'hex')
  const narHashNix32 = encodeNix32(narHashBytes)
  const narHash = `sha256:${narHashNix32}`
  const file = join(plain, 'nar', `${narHashNix32}.nar`)
  await runCommand('mv', [tmpNar, file])

  const zstdTmp = join(root, 'big.nar.zst')
  await runCommand('zstd', ['-q', '-3', '-T0', '-f', '-o', zstdTmp, file])
  const zstdHash = await sha256File(zstdTmp)
  const zstdFile = join(zstd, 'nar', `${encodeNix32(zstdHash)}.nar.zst`)
  await runCommand('mv', [zstdTmp, zstdFile])
  const zstdSize = statSync(zstdFile).size

  const hashPart = nix32(20)
  const storePath = `/nix/store/${hashPart}-bench-big-nar`
  writeFileSync(join(plain, `${hashPart}.narinfo`), narInfoText({
    storePath, url: `nar/${narHashNix32}.nar`, compression: 'none', fileHash: narHash, fileSize: size, narHash, narSize: size
  }))
  writeFileSync(join(zstd, `${hashPart}.narinfo`), narInfoText({
    storePath, url: `nar/${encodeNix32(zstdHash)}.nar.zst`, compression: 'zstd', fileHash: `sha256:${encodeNix32(zstdHash)}`, fileSize: zstdSize, narHash, narSize: size
  }))
  return {
    root,
    hashParts,
    texts,
    meanNarInfoBytes: meanBytes,
    big: { hashPart, file, narHash: narHashNix32, narHashHex: hex, narSize: size, content, zstdFile, zstdSize }
  }
}
