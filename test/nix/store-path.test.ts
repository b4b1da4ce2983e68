import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { NixHash } from '../../src/nix/hash.ts'
import {
  STORE_DIR, isHashPart, isStorePathName, isStorePath, makeFixedOutputPath, makeSourcePath, makeStorePath, makeTextPath,
  parseStorePath, parseStorePathBaseName, toStorePath
} from '../../src/nix/store-path.ts'
import {
  checkContentAddress, narHashOfContentAddress, parseContentAddress, renderContentAddress, storePathFromContentAddress
} from '../../src/nix/content-address.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'

// Vectors from the protocol reference §4.1 and §4.3 (Nix 2.8).
const HELLO_NAR = NixHash.parse('sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13')
const HELLO_FLAT = NixHash.parse('sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03')
const DIR_NAR = NixHash.parse('sha256:d69db54f78336f5daf5b776d0a325557713258c347800f6bd8696d6f0b71cdf0')
const REF_TXT = NixHash.parse('sha256:9cf5a8d7154821b7a2c03ac43972a280c598305b7881f46f2da54527f66bca89')
const HELLO = '/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt'
const HELLO_FIXED = '/nix/store/gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt'
const DIR = '/nix/store/vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir'
const REF = '/nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt'

test('makeStorePath reproduces the §4.3 source vector, including the XOR fold', () => {
  assert.equal(makeStorePath('source', HELLO_NAR, 'hello.txt'), HELLO)
  assert.equal(makeSourcePath('hello.txt', HELLO_NAR), HELLO)
  assert.equal(makeSourcePath('dir', DIR_NAR), DIR)
  assert.equal(makeFixedOutputPath('hello.txt', 'nar', HELLO_NAR), HELLO)
})

test('makeFixedOutputPath reproduces the flat vector', () => {
  assert.equal(makeFixedOutputPath('hello.txt', 'flat', HELLO_FLAT), HELLO_FIXED)
  // The inner hash of the §4.3 example.
  const inner = NixHash.of('sha256', `fixed:out:sha256:${HELLO_FLAT.toBase16()}:`)
  assert.equal(inner.toBase16(), 'bc101cf2ad0f504c5dd74b9cce0a732e7157bfbddd2afec191aa0eecd3e252a9')
  assert.equal(makeStorePath('output:out', inner, 'hello.txt'), HELLO_FIXED)
})

test('makeTextPath reproduces the text vector; reference order and form do not matter', () => {
  assert.equal(makeTextPath('ref.txt', REF_TXT, [HELLO, DIR]), REF)
  assert.equal(makeTextPath('ref.txt', REF_TXT, [DIR, HELLO]), REF)
  assert.equal(makeTextPath('ref.txt', REF_TXT, ['vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir', 'i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt']), REF)
  const contents = `see ${HELLO} and ${DIR}\n`
  assert.equal(Buffer.byteLength(contents), 110)
  assert.ok(NixHash.of('sha256', contents).equals(REF_TXT))
})

test('the CA claims of §4.3 reproduce their store paths', () => {
  const claims: Array<[string, string, string[]]> = [
    [HELLO, 'fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw', []],
    [HELLO_FIXED, 'fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq', []],
    [REF, 'text:sha256:12fadgv2fid55mpz90bqbcq9iic0l9r3ki1sq2ibf8a82pbsixcw', ['i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt', 'vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir']]
  ]
  for (const [path, ca, refs] of claims) {
    const { name } = parseStorePath(path)
    assert.equal(storePathFromContentAddress(name, ca, refs), path, ca)
    assert.deepEqual(checkContentAddress({ storePath: path, ca, references: refs }), { status: 'valid' })
    assert.equal(renderContentAddress(parseContentAddress(ca)), ca)
  }
  // The same claim with a reference it does not have, or for another name, is false.
  const bad = checkContentAddress({ storePath: REF, ca: claims[2]![1], references: ['i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt'] })
  assert.equal(bad.status, 'mismatch')
  assert.match((bad as { reason: string }).reason, /claims to be content-addressed/)
  // A flat path cannot have references; the claim is false rather than an exception.
  const flatWithRefs = checkContentAddress({ storePath: HELLO_FIXED, ca: claims[1]![1], references: [DIR] })
  assert.equal(flatWithRefs.status, 'mismatch')
  assert.match((flatWithRefs as { reason: string }).reason, /cannot have references/)
  assert.deepEqual(checkContentAddress({ storePath: HELLO, ca: '', references: [] }), { status: 'none' })
})

test('content addresses accept base16 and base64 digests and render canonically', () => {
  const ca = parseContentAddress(`fixed:r:sha256:${HELLO_NAR.toBase16()}`)
  assert.equal(renderContentAddress(ca), 'fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw')
  assert.equal(renderContentAddress(parseContentAddress(`fixed:r:sha256:${HELLO_NAR.toBase64()}`)), renderContentAddress(ca))
  const sha1 = parseContentAddress('fixed:r:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs')
  assert.deepEqual([sha1.type, sha1.type === 'fixed' && sha1.method], ['fixed', 'nar'])
  // NAR + non-sha256 is an output:out path, not a source path.
  assert.notEqual(storePathFromContentAddress('x', sha1), makeSourcePath('x', HELLO_NAR))
  const git = parseContentAddress('fixed:git:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs')
  assert.equal(git.type === 'fixed' && git.method, 'git')
})

test('only fixed:r:sha256 fixes the NarHash', () => {
  // §4.3: hello.txt added with --add has this CA, and §4.1 gives the same hash as its NAR's sha256.
  const nar = narHashOfContentAddress('fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw')
  assert.equal(nar?.toString(), 'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw')
  for (const ca of ['text:sha256:12fadgv2fid55mpz90bqbcq9iic0l9r3ki1sq2ibf8a82pbsixcw', 'fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq',
    'fixed:r:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs', 'fixed:git:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs']) {
    assert.equal(narHashOfContentAddress(ca), undefined, ca)
  }
})

test('malformed content addresses are FormatErrors with a precise message', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /not of the form/],
    ['sha256:abc', /unknown prefix 'sha256'/],
    ['source:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw', /unknown prefix 'source'/],
    ['fixed:sha256', /no '<algo>:<hash>'/],
    ['fixed:blake3:abc', /unknown hash algorithm 'blake3'/],
    ['text:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs', /must use sha256/],
    ['fixed:r:sha256:abc', /not a sha256 digest/],
    ['fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqe', /invalid character 'e'/]
  ]
  for (const [ca, message] of cases) assert.throws(() => parseContentAddress(ca), { name: 'FormatError', message }, ca)
})

test('self-references: only NAR sha256 paths may have them, and checkContentAddress finds them', () => {
  const withSelf = makeSourcePath('loop', HELLO_NAR, [DIR], true)
  assert.notEqual(withSelf, makeSourcePath('loop', HELLO_NAR, [DIR]))
  const base = parseStorePath(withSelf).baseName
  assert.deepEqual(checkContentAddress({ storePath: withSelf, ca: `fixed:r:${HELLO_NAR.toString()}`, references: [base, DIR] }), { status: 'valid' })
  assert.throws(() => makeFixedOutputPath('x', 'flat', HELLO_FLAT, STORE_DIR, [], true), { name: 'FormatError', message: /cannot have references/ })
  assert.throws(() => storePathFromContentAddress('x', `text:${REF_TXT.toString()}`, [], STORE_DIR, true), { name: 'FormatError', message: /cannot refer to itself/ })
})

test('store paths depend on the store dir', () => {
  const gnu = makeSourcePath('hello.txt', HELLO_NAR, [], false, '/gnu/store')
  assert.match(gnu, /^\/gnu\/store\/[0-9a-z]{32}-hello\.txt$/)
  assert.notEqual(gnu.slice(-42), HELLO.slice(-42))
  assert.equal(parseStorePath(gnu, '/gnu/store').storeDir, '/gnu/store')
})

test('parseStorePath splits a valid path', () => {
  assert.deepEqual(parseStorePath(REF), {
    hashPart: 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0', name: 'ref.txt', baseName: 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt', path: REF, storeDir: STORE_DIR
  })
  assert.equal(parseStorePathBaseName('ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-a-b-c').name, 'a-b-c')
  const longest = 'a'.repeat(211)
  assert.equal(parseStorePathBaseName(`ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-${longest}`).name, longest)
  assert.ok(isStorePath(REF))
  assert.ok(!isStorePath(REF + '/bin'))
})

test('toStorePath names the store path a path lies in', () => {
  assert.equal(toStorePath(`${REF}/bin/hello`), REF)
  assert.equal(toStorePath(`${REF}/`), REF)
  assert.equal(toStorePath(REF), REF)
  assert.equal(toStorePath('/tmp/a/b/c'), '/tmp/a/b/c')
  assert.equal(toStorePath('/s/x-y/z', '/s'), '/s/x-y')
})

test('malformed store paths are FormatErrors naming the problem', () => {
  const h = 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0'
  const cases: Array<[string, RegExp]> = [
    [`/gnu/store/${h}-x`, /not in the Nix store '\/nix\/store'/],
    [`/nix/store/${h}-x/bin`, /not directly inside/],
    [`/nix/store//${h}-x`, /not directly inside/],
    [`/nix/store/${h}-x/`, /not directly inside/],
    ['/nix/store/', /too short/],
    [`/nix/store/${h}`, /too short/],
    [`/nix/store/${h}-`, /too short/],
    [`/nix/store/${h.slice(1)}e-x`, /illegal nix32 character "e"/],
    [`/nix/store/${h.toUpperCase()}-x`, /illegal nix32 character "A"/],
    [`/nix/store/${h}_x`, /no '-' after/],
    [`/nix/store/${h}-a b`, /illegal character " "/],
    [`/nix/store/${h}-é`, /illegal character "é"/],
    [`/nix/store/${h}-${'a'.repeat(212)}`, /longer than 211/],
    [`/nix/store/${h}-.`, /has the name '.'/],
    [`/nix/store/${h}-..`, /has the name '..'/],
    [`/nix/store/${h}-.-foo`, /starting with '.-'/],
    [`/nix/store/${h}-..-foo`, /starting with '..-'/]
  ]
  for (const [path, message] of cases) assert.throws(() => parseStorePath(path), { name: 'FormatError', message }, path)
  assert.throws(() => makeStorePath('source', HELLO_NAR, 'a/b'), { name: 'FormatError', message: /illegal character "\/"/ })
})

test('isHashPart and isStorePathName', () => {
  assert.ok(isHashPart('ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0'))
  for (const bad of ['', 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y', 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y00', 'AR1A8IYH9MSJJY5V4K9GBHYHA8J2C5Y0', 'tr1a8iyh9msjjy5v4k9gbhyha8j2c5y0']) {
    assert.ok(!isHashPart(bad), bad)
  }
  for (const good of ['a', 'hello-2.12.1', 'x+y_z?=', '.foo', '..foo', '-', 'a'.repeat(211)]) assert.ok(isStorePathName(good), good)
  for (const bad of ['', '.', '..', '.-x', '..-x', 'a/b', 'a b', 'a'.repeat(212)]) assert.ok(!isStorePathName(bad), bad)
})

test('computed store paths match what Nix 2.8 adds', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const nonce = randomBytes(8).toString('hex')
    const file = join(nix.dir, 'file.txt')
    await writeFile(file, `hello ${nonce}\n`)
    const dir = join(nix.dir, 'tree')
    await mkdir(join(dir, 'sub'), { recursive: true })
    await writeFile(join(dir, 'a.txt'), nonce)
    await writeFile(join(dir, 'sub', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
    await symlink('a.txt', join(dir, 'link'))

    const cases: Array<{ args: string[], ca: (info: PathInfo) => string }> = [
      { args: ['--add', file], ca: i => makeSourcePath('file.txt', NixHash.parse(i.narHash)) },
      { args: ['--add', dir], ca: i => makeSourcePath('tree', NixHash.parse(i.narHash)) },
      { args: ['--add-fixed', 'sha256', file], ca: () => makeFixedOutputPath('file.txt', 'flat', NixHash.of('sha256', `hello ${nonce}\n`)) },
      { args: ['--add-fixed', 'sha1', file], ca: () => makeFixedOutputPath('file.txt', 'flat', NixHash.of('sha1', `hello ${nonce}\n`)) },
      { args: ['--add-fixed', '--recursive', 'sha512', dir], ca: i => storePathFromContentAddress('tree', i.ca!) }
    ]
    for (const { args, ca } of cases) {
      const path = (await nix.run('nix-store', args)).trim()
      const [info] = JSON.parse(await nix.run('nix', ['path-info', '--json', path])) as PathInfo[]
      assert.ok(info !== undefined)
      assert.equal(info.path, path)
      assert.equal(ca(info), path, args.join(' '))
      assert.equal(storePathFromContentAddress(parseStorePath(path).name, info.ca!, info.references), path, info.ca)
    }

    // builtins.toFile gives a text path with references.
    const hello = (await nix.run('nix-store', ['--add', file])).trim()
    const contents = `uses ${hello}\n`
    // The reference comes from the string's context, so the path must be interpolated, not quoted.
    const expr = `builtins.toFile "refs-${nonce}.txt" "uses \${builtins.storePath ${hello}}\\n"`
    const text = (await nix.run('nix-instantiate', ['--eval', '--read-write-mode', '-E', `"\${${expr}}"`])).trim().replace(/^"|"$/g, '')
    assert.equal(makeTextPath(`refs-${nonce}.txt`, NixHash.of('sha256', contents), [hello]), text)
    const [textInfo] = JSON.parse(await nix.run('nix', ['path-info', '--json', text])) as PathInfo[]
    assert.match(textInfo!.ca!, /^text:sha256:/)
    assert.equal(storePathFromContentAddress(`refs-${nonce}.txt`, textInfo!.ca!, textInfo!.references), text)
  } finally {
    await nix.cleanup()
  }
})

interface PathInfo { path: string, narHash: string, narSize: number, references: string[], ca?: string }
