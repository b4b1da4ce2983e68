/**
 * A real closure, built by the real Nix for the test that asks for it: a tree with executables,
 * symlinks (relative, absolute, dangling), nested and empty directories and an empty file; a NAR
 * of just over 100 MiB; a text (content-addressed) path; and a top path referring to all of them.
 * A nonce makes every run build fresh store paths. `copyTo` writes a binary cache with
 * `nix copy --to file://…`, signed with a key made here.
 */
import { randomBytes } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NarInfo } from '../../src/nix/narinfo.ts'
import type { NixEnv } from './nix.ts'
import { startCacheServer, type CacheServer, type CacheServerOptions } from './cache-server.ts'

export interface Closure {
  top: string
  tree: string
  big: string
  note: string
  /** Every path of the runtime closure of `top`. */
  paths: string[]
  secretKeyFile: string
  publicKey: string
  secretKey: string
}

const EXPRESSION = `{ nonce, withBig, bigBytes ? "65536" }:
let
  mk = name: script: builtins.derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin"; NONCE = nonce;
  };
  tree = mk "tree" ''
    mkdir -p $out/bin $out/share/doc/deep/deeper $out/empty-dir
    printf '#!/bin/sh\\necho hello from narswarm\\n' > $out/bin/hello; chmod +x $out/bin/hello
    : > $out/share/empty-file
    echo "$NONCE" > $out/share/doc/deep/deeper/nonce.txt
    ln -s ../share/doc $out/bin/doc-link
    ln -s /nonexistent/target $out/dangling
    echo A > $out/share/Upper; echo a > $out/share/lower; echo u > $out/share/_under
  '';
  big = mk "big" (if withBig then ''
    mkdir -p $out
    head -c 1048576 /dev/urandom > $out/big.bin
    head -c 104857600 /dev/zero >> $out/big.bin
    head -c 65536 /dev/urandom >> $out/big.bin
  '' else ''
    mkdir -p $out; head -c \${bigBytes} /dev/urandom > $out/big.bin
  '');
  note = builtins.toFile "note-\${nonce}.txt" "a text file\\n";
  top = mk "top" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\\nexec \${tree}/bin/hello\\n' > $out/bin/top; chmod +x $out/bin/top
    echo \${big} > $out/big-path
    cat \${note} > $out/note
    ln -s \${note} $out/note-link
  '';
in { inherit top tree big note; }
`

/**
 * Builds the closure. `withBig: false` makes the big path small (`bigBytes` of random bytes,
 * default 64 KiB), for tests that don't need 100 MiB.
 */
export async function buildClosure (nix: NixEnv, opts: { withBig?: boolean, bigBytes?: number } = {}): Promise<Closure> {
  const nonce = randomBytes(8).toString('hex')
  const file = join(nix.dir, 'closure.nix')
  await writeFile(file, EXPRESSION)
  const attr = async (name: string): Promise<string> => (await nix.run('nix-build', [file, '-A', name, '--no-out-link',
    '--argstr', 'nonce', nonce, '--arg', 'withBig', String(opts.withBig ?? true), '--argstr', 'bigBytes', String(opts.bigBytes ?? 65536)])).trim()
  const top = await attr('top')
  const [tree, big] = [await attr('tree'), await attr('big')]
  const paths = (await nix.run('nix-store', ['-qR', top])).trim().split('\n').sort()
  const note = paths.find(p => p.endsWith(`-note-${nonce}.txt`))!
  return { top, tree, big, note, paths, ...await signingKey(nix, nonce) }
}

/** A new signing key made by the real Nix, its secret in a file in the Nix environment. */
export async function signingKey (nix: NixEnv, nonce = randomBytes(8).toString('hex')): Promise<{ secretKeyFile: string, publicKey: string, secretKey: string }> {
  const secretKeyFile = join(nix.dir, 'cache.secret')
  const secretKey = (await nix.run('nix', ['key', 'generate-secret', '--key-name', `narswarm-test-${nonce}`])).trim()
  await writeFile(secretKeyFile, secretKey)
  const publicKey = (await nix.run('nix', ['key', 'convert-secret-to-public'], { input: secretKey })).trim()
  return { secretKeyFile, publicKey, secretKey }
}

export interface WideClosure {
  top: string
  /** Every path of the runtime closure of `top`: `count` leaves and `top`. */
  paths: string[]
  secretKeyFile: string
  publicKey: string
  secretKey: string
}

const WIDE_EXPRESSION = `{ nonce, count }:
let outs = builtins.genList (i: "o\${toString i}") count;
in builtins.derivation {
  name = "wide"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; NONCE = nonce;
  outputs = [ "out" ] ++ outs;
  args = [ "-c" ''
    i=0
    for o in \${builtins.concatStringsSep " " outs}; do
      eval p=\\$$o
      mkdir -p $p; echo "$NONCE $o" > $p/id
      head -c $(( (i * 7919 % 97 + 4) * 4096 )) /dev/urandom > $p/data
      echo $p >> refs; i=$((i+1))
    done
    mkdir -p $out; cp refs $out/refs
  '' ];
}
`

/**
 * A closure of many store paths, built by the real Nix in one build: one derivation with `count`
 * extra outputs of 16 KiB to 400 KiB of random bytes each (about 200 KiB on average), and `top`
 * referring to all of them. For tests that need a closure of 100 paths and more in seconds.
 */
export async function buildWideClosure (nix: NixEnv, count = 110): Promise<WideClosure> {
  const nonce = randomBytes(8).toString('hex')
  const file = join(nix.dir, 'wide.nix')
  await writeFile(file, WIDE_EXPRESSION)
  const top = (await nix.run('nix-build', [file, '--no-out-link', '--argstr', 'nonce', nonce, '--arg', 'count', String(count)])).trim().split('\n')[0]!
  const paths = (await nix.run('nix-store', ['-qR', top])).trim().split('\n').sort()
  return { top, paths, ...await signingKey(nix, nonce) }
}

/** `nix copy` of `paths` (and their closure) into a new file:// binary cache at `dir`. */
export async function copyTo (nix: NixEnv, closure: Pick<Closure, 'top' | 'secretKeyFile'>, dir: string, compression: string, paths = [closure.top]): Promise<void> {
  await nix.run('nix', ['copy', '--to', `file://${dir}?compression=${compression}&secret-key=${closure.secretKeyFile}`, ...paths])
}

/**
 * A small closure (`buildClosure` without the big NAR) written by the real Nix into an xz cache
 * under the Nix environment, served over HTTP (`options`: the server's, e.g. credentials).
 */
export async function servedClosure (nix: NixEnv, options: CacheServerOptions = {}): Promise<{ closure: Closure, dir: string, upstream: CacheServer }> {
  const closure = await buildClosure(nix, { withBig: false })
  const dir = join(nix.dir, 'cache-xz')
  await copyTo(nix, closure, dir, 'xz', closure.paths)
  return { closure, dir, upstream: await startCacheServer(dir, options) }
}

/** The narinfo Nix wrote for a store path into cache `dir`. */
export async function readNarInfo (dir: string, storePath: string): Promise<string> {
  return await readFile(join(dir, `${hashPartOf(storePath)}.narinfo`), 'utf8')
}

/**
 * `storePath` copied by Nix into an uncompressed cache `dir` (unsigned): its narinfo's file name
 * and text, and the NAR as Nix wrote it.
 */
export async function plainNarOf (nix: NixEnv, storePath: string, dir: string): Promise<{ name: string, narinfo: string, nar: Buffer }> {
  await nix.run('nix', ['copy', '--to', `file://${dir}?compression=none`, storePath])
  const name = `${hashPartOf(storePath)}.narinfo`
  const narinfo = await readFile(join(dir, name), 'utf8')
  return { name, narinfo, nar: await readFile(join(dir, /^URL: (.*)$/m.exec(narinfo)![1]!)) }
}

/** Every narinfo Nix wrote into cache `dir`, parsed. */
export async function readNarInfos (dir: string): Promise<NarInfo[]> {
  const names = (await readdir(dir)).filter(n => n.endsWith('.narinfo'))
  return await Promise.all(names.map(async n => NarInfo.parse(await readFile(join(dir, n), 'utf8'))))
}

export function hashPartOf (storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)
}
