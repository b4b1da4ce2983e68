/**
 * The NAR compressions that Nix writes through libarchive besides the five that are safe to write
 * everywhere (compression.ts): `nix copy --to 'file://…?compression=lz4'` works with Nix 2.8, and
 * so do gzip, compress, lzma and lzip (lzop, grzip and lrzip need programs that Nix runs, and are
 * rare). Caches written that way exist, so narswarm reads them; it never writes them. gzip
 * decodes in-process with node:zlib; the others through the program that reads them, pulled
 * through a pipe like the `xz` and `bzip2` programs, so memory stays bounded whatever the ratio.
 * `gzip -d` also reads compress's `.Z` format; `xz` reads `.lzma` and, from 5.4 on, `.lz`.
 */
import { XZ_MEMLIMIT } from './xz-decoder.ts'

export const DECODE_ONLY = ['gzip', 'compress', 'lzma', 'lzip', 'lz4'] as const
export type DecodeOnly = (typeof DECODE_ONLY)[number]

export function isDecodeOnly (name: string): name is DecodeOnly {
  return (DECODE_ONLY as readonly string[]).includes(name)
}

/** The program that decodes each, its arguments, and the Debian package that has it. */
export const DECODE_PROGRAMS: Readonly<Record<Exclude<DecodeOnly, 'gzip'>, { bin: string, args: readonly string[], debian: string }>> = {
  compress: { bin: 'gzip', args: ['-dcq'], debian: 'gzip' },
  lzma: { bin: 'xz', args: ['--format=lzma', '-dcq', `--memlimit-decompress=${XZ_MEMLIMIT}`], debian: 'xz-utils' },
  lzip: { bin: 'xz', args: ['--format=lzip', '-dcq', `--memlimit-decompress=${XZ_MEMLIMIT}`], debian: 'xz-utils (5.4 or later)' },
  lz4: { bin: 'lz4', args: ['-dcq'], debian: 'lz4' }
}
