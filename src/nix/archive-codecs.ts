/**
 * The NAR compressions that Nix writes through libarchive besides the five that are safe to write
 * everywhere (compression.ts): `nix copy --to 'file://…?compression=lz4'` works with Nix 2.8, and
 * so do gzip, compress, lzma and lzip (lzop, grzip and lrzip need programs that Nix runs, and are
 * rare). Caches written that way exist, so narswarm reads them; it never writes them. gzip
 * decodes in-process with node:zlib; the others through the program that reads them, pulled
 * through a pipe like the `xz` and `bzip2` programs, so memory stays bounded whatever the ratio.
 * `gzip -d` also reads compress's `.Z` format; `xz` reads `.lzma` and, from 5.4 on, `.lz`.
 */
import { spawnSync } from 'node:child_process'
import { XZ_MEMLIMIT } from './xz-decoder.ts'

export const DECODE_ONLY = ['gzip', 'compress', 'lzma', 'lzip', 'lz4'] as const
export type DecodeOnly = (typeof DECODE_ONLY)[number]

export function isDecodeOnly (name: string): name is DecodeOnly {
  return (DECODE_ONLY as readonly string[]).includes(name)
}

/** A program that decodes one of them: its name on PATH, its arguments, the Debian package. */
export interface DecodeProgram { bin: string, args: readonly string[], debian: string, minVersion?: [number, number] }

/**
 * The programs that decode each, the preferred first. lzip's own program reads `.lz`; `xz` does
 * too from 5.4 on (Debian 12 has 5.4.1, Ubuntu 22.04 5.2.5), which `minVersion` says.
 */
export const DECODE_PROGRAMS: Readonly<Record<Exclude<DecodeOnly, 'gzip'>, readonly DecodeProgram[]>> = {
  compress: [{ bin: 'gzip', args: ['-dcq'], debian: 'gzip' }],
  lzma: [{ bin: 'xz', args: ['--format=lzma', '-dcq', `--memlimit-decompress=${XZ_MEMLIMIT}`], debian: 'xz-utils' }],
  lzip: [
    { bin: 'lzip', args: ['-dcq'], debian: 'lzip' },
    { bin: 'xz', args: ['--format=lzip', '-dcq', `--memlimit-decompress=${XZ_MEMLIMIT}`], debian: 'xz-utils', minVersion: [5, 4] }
  ],
  lz4: [{ bin: 'lz4', args: ['-dcq'], debian: 'lz4' }]
}

/** The version a program prints first (`xz (XZ Utils) 5.4.1`), as [major, minor]; asked once. */
const versions = new Map<string, [number, number] | undefined>()
export function programVersion (path: string): [number, number] | undefined {
  if (!versions.has(path)) {
    const out = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 5_000 }).stdout ?? ''
    const m = /(\d+)\.(\d+)/.exec(out)
    versions.set(path, m === null ? undefined : [Number(m[1]), Number(m[2])])
  }
  return versions.get(path)
}

/**
 * The first of `programs` this machine has (`find` looks a name up on PATH), as the path to run
 * and its arguments; or why none will do.
 */
export function pickProgram (compression: string, programs: readonly DecodeProgram[], find: (bin: string) => string | false): { path: string, args: readonly string[] } | { problem: string } {
  for (const p of programs) {
    const path = find(p.bin)
    if (path === false) continue
    if (p.minVersion !== undefined) {
      const v = programVersion(path)
      if (v === undefined || v[0] < p.minVersion[0] || (v[0] === p.minVersion[0] && v[1] < p.minVersion[1])) continue
    }
    return { path, args: p.args }
  }
  const wanted = programs.map(p => `'${p.bin}'${p.minVersion === undefined ? '' : ` ${p.minVersion.join('.')} or later`} (Debian package ${p.debian})`)
  return { problem: `${compression}: decoding it needs ${wanted.join(' or ')}, not found on PATH` }
}
