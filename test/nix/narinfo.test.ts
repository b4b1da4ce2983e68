import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'
import { EXAMPLE_NARINFO, SIG1 } from '../helpers/vectors.ts'

const EXAMPLE = EXAMPLE_NARINFO
const NAR_HASH = 'sha256:1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq'
const SIG = SIG1
const HELLO = 'i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt'
const DIR = 'vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir'

const MINIMAL = `StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt
URL: nar/x.nar
NarHash: ${NAR_HASH}
NarSize: 120
`

test('the §1.2 example round-trips byte for byte and reads correctly', () => {
  const info = NarInfo.parse(EXAMPLE)
  assert.equal(info.toString(), EXAMPLE)
  assert.equal(NarInfo.parse(Buffer.from(EXAMPLE)).toString(), EXAMPLE)
  assert.equal(info.storePath, '/nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt')
  assert.equal(info.hashPart, 'ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0')
  assert.equal(info.storePathParsed.name, 'ref.txt')
  assert.equal(info.url, 'nar/1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq.nar')
  assert.equal(info.compression, 'none')
  assert.equal(info.fileHash?.toString(), NAR_HASH)
  assert.equal(info.fileSize, 224)
  assert.ok(info.narHash.equals(NixHash.parse(NAR_HASH)))
  assert.equal(info.narSize, 224)
  assert.deepEqual(info.references, [HELLO, DIR])
  assert.equal(info.deriver, undefined)
  assert.deepEqual(info.sigs, [SIG])
  assert.equal(info.ca, 'text:sha256:12fadgv2fid55mpz90bqbcq9iic0l9r3ki1sq2ibf8a82pbsixcw')
})

test('optional fields default as in Nix; unknown keys, odd orders and duplicates survive serialization', () => {
  const info = NarInfo.parse(MINIMAL)
  assert.equal(info.compression, 'bzip2')
  assert.equal(info.rawCompression, undefined)
  assert.equal(info.fileHash, undefined)
  assert.equal(info.fileSize, undefined)
  assert.deepEqual(info.references, [])
  assert.deepEqual(info.sigs, [])
  assert.equal(NarInfo.parse(MINIMAL + 'Compression: \n').compression, 'bzip2')

  const odd = [
    'System: x86_64-linux', 'NarSize: 1', `NarHash: sha256:${NixHash.parse(NAR_HASH).toBase16()}`, 'X-Custom: a: b:  c ',
    'URL: https://elsewhere.example/n.nar.xz?x=1', 'StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt',
    'NarSize: 120', 'Deriver: unknown-deriver', 'CA: ', `Sig: ${SIG}`, `Sig: ${SIG}`, `References:  ${HELLO}  ${HELLO}`,
    'FileHash: sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=', 'FileSize: 0', 'Compression: xz', ''
  ].join('\n')
  const o = NarInfo.parse(odd)
  assert.equal(o.toString(), odd)
  assert.equal(o.narSize, 120, 'the last duplicate wins')
  assert.equal(o.narHash.toString(), NAR_HASH, 'base16 NarHash is accepted and re-rendered on demand')
  assert.equal(o.field('System'), 'x86_64-linux')
  assert.equal(o.field('X-Custom'), 'a: b:  c ')
  assert.equal(o.deriver, undefined)
  assert.equal(o.ca, undefined)
  assert.deepEqual(o.sigs, [SIG])
  assert.deepEqual(o.references, [HELLO])
  assert.equal(o.fileSize, 0)
  assert.equal(o.fileHash?.toBase16(), '1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13')
  assert.equal(NarInfo.parse(MINIMAL + `Deriver: ${DIR}\n`).deriver, DIR)
  assert.equal(NarInfo.parse(`NarSize: ${Number.MAX_SAFE_INTEGER}\n` + MINIMAL.replace('NarSize: 120\n', '')).narSize, Number.MAX_SAFE_INTEGER)
})

test('malformed narinfos are FormatErrors naming the line and the reason', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /narinfo is empty/],
    ['no final LF', MINIMAL.slice(0, -1), /does not end with a line feed/],
    ['CRLF', MINIMAL.replaceAll('\n', '\r\n'), /line 1: carriage return/],
    ['blank line', MINIMAL.replace('URL', '\nURL'), /line 2: blank line/],
    ['trailing blank line', MINIMAL + '\n', /line 5: blank line/],
    ['no colon', MINIMAL + 'Garbage\n', /line 5: expecting ': '/],
    ['no space after colon', MINIMAL.replace('NarSize: 120', 'NarSize:120'), /line 4: expecting ': ' after "NarSize", found ":1"/],
    ['References without trailing space', MINIMAL + 'References:\n', /line 5: expecting ': ' after "References"/],
    ['tab after colon', MINIMAL.replace('URL: ', 'URL:\t'), /line 2: expecting ': '/],
    ['empty key', MINIMAL + ': x\n', /line 5 \(\): invalid key/],
    ['missing StorePath', MINIMAL.replace(/^StorePath.*\n/, ''), /no StorePath line/],
    ['missing URL', MINIMAL.replace(/URL.*\n/, ''), /no URL line or an empty URL/],
    ['empty URL', MINIMAL.replace('URL: nar/x.nar', 'URL: '), /no URL line or an empty URL/],
    ['missing NarHash', MINIMAL.replace(/NarHash.*\n/, ''), /no NarHash line/],
    ['missing NarSize', MINIMAL.replace(/NarSize.*\n/, ''), /no NarSize line or a NarSize of 0/],
    ['zero NarSize', MINIMAL.replace('NarSize: 120', 'NarSize: 0'), /NarSize of 0/],
    ['negative NarSize', MINIMAL.replace('NarSize: 120', 'NarSize: -1'), /line 4 \(NarSize\): NarSize '-1' is not a decimal number/],
    ['NarSize with space', MINIMAL.replace('NarSize: 120', 'NarSize: 120 '), /line 4 \(NarSize\): NarSize '120 ' is not a decimal/],
    ['huge NarSize', MINIMAL.replace('NarSize: 120', 'NarSize: 9007199254740992'), /line 4 \(NarSize\): NarSize 9007199254740992 is larger than/],
    ['bad FileSize', MINIMAL + 'FileSize: 1e3\n', /line 5 \(FileSize\): FileSize '1e3' is not a decimal/],
    ['StorePath outside the store', MINIMAL.replace('/nix/store/', '/gnu/store/'), /line 1 \(StorePath\): path .* is not in the Nix store/],
    ['StorePath bad hash', MINIMAL.replace('i9pm', 'I9PM'), /line 1 \(StorePath\): .*illegal nix32 character "I"/],
    ['bad NarHash', MINIMAL.replace(NAR_HASH, 'sha256:xyz'), /line 3 \(NarHash\): 'xyz' is not a sha256 digest/],
    ['unprefixed NarHash', MINIMAL.replace(NAR_HASH, NAR_HASH.slice(7)), /line 3 \(NarHash\): hash .* does not name its algorithm/],
    ['sha512 NarHash', MINIMAL.replace(NAR_HASH, NixHash.of('sha512', '').toString()), /line 3 \(NarHash\): NarHash must be sha256, not sha512/],
    ['bad FileHash', MINIMAL + 'FileHash: md5:00\n', /line 5 \(FileHash\): '00' is not a md5 digest/],
    ['bad reference', MINIMAL + `References: ${HELLO} /nix/store/${DIR}\n`, /line 5 \(References\): store path base name '\/nix\/store\/vcx8.*' has an illegal nix32 character/],
    ['second References', MINIMAL + `References: ${HELLO}\nReferences: ${DIR}\n`, /line 6 \(References\): second References line/],
    ['second empty References', MINIMAL + `References: ${HELLO}\nReferences: \n`, /line 6 \(References\): second References line/],
    ['bad Deriver', MINIMAL + 'Deriver: foo.drv\n', /line 5 \(Deriver\): store path base name 'foo.drv' is too short/],
    ['empty Deriver', MINIMAL + 'Deriver: \n', /line 5 \(Deriver\): .*too short/],
    ['second CA', MINIMAL + 'CA: fixed:r:' + NAR_HASH + '\nCA: fixed:r:' + NAR_HASH + '\n', /line 6 \(CA\): second CA line/],
    ['bad CA', MINIMAL + 'CA: nar:sha256:abc\n', /line 5 \(CA\): content address .* unknown prefix 'nar'/],
    ['unknown compression', MINIMAL + 'Compression: rar\n', /line 5 \(Compression\): unknown compression 'rar'/],
    ['Sig without name', MINIMAL + 'Sig: :AAAA\n', /line 5 \(Sig\): signature ':AAAA' has no key name/],
    ['Sig without colon', MINIMAL + 'Sig: AAAA\n', /line 5 \(Sig\): signature 'AAAA' has no key name/],
    ['Sig with empty payload', MINIMAL + 'Sig: k:\n', /line 5 \(Sig\): signature 'k:' has an invalid base64 payload/],
    ['Sig with bad base64', MINIMAL + 'Sig: k:AA!A\n', /line 5 \(Sig\): signature 'k:AA!A' has an invalid base64 payload/]
  ]
  for (const [what, text, message] of cases) {
    assert.throws(() => NarInfo.parse(text), { name: 'FormatError', message }, what)
  }
  assert.throws(() => NarInfo.parse(Uint8Array.from([0xff, 0x0a])), { name: 'FormatError', message: /not valid UTF-8/ })
  const err = (() => { try { NarInfo.parse(MINIMAL + 'Garbage\n') } catch (e) { return e } })() as { position?: number }
  assert.equal(err.position, 5)
})

test('withTransport rewrites only URL, Compression, FileHash and FileSize, in place', () => {
  const info = NarInfo.parse(EXAMPLE)
  const moved = info.withTransport({ url: 'nar/abc.nar.zst', compression: 'zstd', fileHash: 'sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73', fileSize: 99 })
  assert.equal(moved.toString(), EXAMPLE
    .replace(/^URL: .*$/m, 'URL: nar/abc.nar.zst')
    .replace('Compression: none', 'Compression: zstd')
    .replace(/^FileHash: .*$/m, 'FileHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73')
    .replace('FileSize: 224', 'FileSize: 99'))
  assert.equal(moved.compression, 'zstd')
  assert.equal(info.toString(), EXAMPLE, 'the original is unchanged')

  // Without FileHash/FileSize they are removed; the rest stays.
  const bare = info.withTransport({ url: 'nar/y.nar', compression: 'none' })
  assert.equal(bare.toString(), EXAMPLE.replace(/^URL: .*$/m, 'URL: nar/y.nar').replace(/^File.*\n/gm, ''))

  // Missing fields are inserted after their predecessor in Nix's writer order.
  const minimal = NarInfo.parse(MINIMAL + 'Sig: k:AAAA\n')
  const added = minimal.withTransport({ url: 'nar/z.nar', compression: 'none', fileHash: NixHash.parse(NAR_HASH), fileSize: 120 })
  assert.equal(added.toString(), [
    'StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt', 'URL: nar/z.nar', 'Compression: none',
    `FileHash: ${NAR_HASH}`, 'FileSize: 120', `NarHash: ${NAR_HASH}`, 'NarSize: 120', 'Sig: k:AAAA', ''
  ].join('\n'))
  // In an unusual order, a missing field still goes right after its writer-order predecessor.
  const sizeOnly = NarInfo.parse(MINIMAL.replace('URL: nar/x.nar\n', 'URL: nar/x.nar\nFileSize: 3\nCompression: xz\n'))
  assert.equal(sizeOnly.withTransport({ url: 'u', compression: 'none', fileHash: NAR_HASH, fileSize: 4 }).toString(),
    MINIMAL.replace('URL: nar/x.nar\n', `URL: u\nFileSize: 4\nCompression: none\nFileHash: ${NAR_HASH}\n`))
  // Duplicated transport lines collapse into the first one.
  const dup = NarInfo.parse(MINIMAL + 'URL: nar/second.nar\n')
  assert.equal(dup.withTransport({ url: 'nar/n.nar', compression: 'none' }).toString(),
    MINIMAL.replace('URL: nar/x.nar\n', 'URL: nar/n.nar\nCompression: none\n'))

  assert.throws(() => info.withTransport({ url: '', compression: 'none' }), { name: 'FormatError', message: /empty URL/ })
  assert.throws(() => info.withTransport({ url: 'a\nStorePath: x', compression: 'none' }), { name: 'FormatError', message: /line break/ })
  assert.throws(() => info.withTransport({ url: 'u', compression: '' }), { name: 'FormatError', message: /explicitly/ })
  assert.throws(() => info.withTransport({ url: 'u', compression: 'none', fileSize: -1 }), { name: 'FormatError', message: /non-negative/ })
  assert.throws(() => info.withTransport({ url: 'u', compression: 'none', fileHash: 'sha256:nope' }), { name: 'FormatError', message: /FileHash/ })
})

test('withSigs appends new signatures only', () => {
  const info = NarInfo.parse(EXAMPLE)
  const more = info.withSigs([SIG, 'other-1:AAAA', 'other-1:AAAA'])
  assert.equal(more.toString(), EXAMPLE.replace(`Sig: ${SIG}\n`, `Sig: ${SIG}\nSig: other-1:AAAA\n`))
  assert.deepEqual(more.sigs, [SIG, 'other-1:AAAA'])
  assert.equal(info.withSigs([SIG]).toString(), EXAMPLE)
  // With no Sig yet: before CA, else at the end.
  const unsigned = EXAMPLE.replace(`Sig: ${SIG}\n`, '')
  assert.equal(NarInfo.parse(unsigned).withSigs(['k:AAAA']).toString(), unsigned.replace('CA:', 'Sig: k:AAAA\nCA:'))
  assert.equal(NarInfo.parse(MINIMAL).withSigs(['k:AAAA']).toString(), MINIMAL + 'Sig: k:AAAA\n')
  assert.throws(() => info.withSigs(['no-payload:']), { name: 'FormatError', message: /invalid base64/ })
})

test('build writes Nix\'s field order and reproduces the §1.2 example', () => {
  const built = NarInfo.build({
    storePath: '/nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt',
    url: 'nar/1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq.nar',
    compression: 'none',
    fileHash: NixHash.parse(NAR_HASH),
    fileSize: 224,
    narHash: NixHash.parse(NAR_HASH).toBase16().replace(/^/, 'sha256:'),
    narSize: 224,
    references: [`/nix/store/${DIR}`, HELLO],
    sigs: [SIG],
    ca: 'text:sha256:12fadgv2fid55mpz90bqbcq9iic0l9r3ki1sq2ibf8a82pbsixcw'
  })
  assert.equal(built.toString(), EXAMPLE.replace(`NarHash: ${NAR_HASH}`, `NarHash: sha256:${NixHash.parse(NAR_HASH).toBase16()}`))
  const rebuilt = NarInfo.build({ ...builtFields(), narHash: NixHash.parse(NAR_HASH) })
  assert.equal(rebuilt.toString(), [
    'StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt', 'URL: nar/h.nar', 'Compression: none',
    `NarHash: ${NAR_HASH}`, 'NarSize: 120', 'References: ', `Deriver: ${DIR}`, 'Sig: a:AAAA', 'Sig: b:AAAA', ''
  ].join('\n'))
  assert.throws(() => NarInfo.build({ ...builtFields(), compression: '' }), { name: 'FormatError', message: /explicitly/ })
  assert.throws(() => NarInfo.build({ ...builtFields(), narSize: 0 }), { name: 'FormatError', message: /NarSize of 0/ })
  assert.throws(() => NarInfo.build({ ...builtFields(), narSize: 1.5 }), { name: 'FormatError', message: /safe integer/ })
  assert.throws(() => NarInfo.build({ ...builtFields(), references: ['nope'] }), { name: 'FormatError', message: /too short/ })
})

function builtFields () {
  return {
    storePath: '/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt',
    url: 'nar/h.nar',
    compression: 'none',
    narHash: NAR_HASH,
    narSize: 120,
    references: [],
    deriver: `/nix/store/${DIR}`,
    sigs: ['b:AAAA', 'a:AAAA', 'b:AAAA']
  }
}

test('every narinfo Nix 2.8 writes round-trips byte for byte and matches path-info', { skip: nixSkip() }, async () => {
  const nix = await makeNixEnv()
  try {
    const nonce = randomBytes(8).toString('hex')
    const file = join(nix.dir, `leaf-${nonce}.txt`)
    await writeFile(file, `leaf ${nonce}\n`)
    const leaf = (await nix.run('nix-store', ['--add', file])).trim()
    const flat = (await nix.run('nix-store', ['--add-fixed', 'sha256', file])).trim()
    const drv = join(nix.dir, 'drv.nix')
    await writeFile(drv, `let leaf = builtins.storePath "${leaf}"; in builtins.derivation {
      name = "root-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo \${leaf} > $out" ]; }`)
    const built = (await nix.run('nix-build', [drv, '--no-out-link'])).trim()
    const cache = join(nix.dir, 'cache')
    for (const compression of ['none', 'xz']) {
      await nix.run('nix', ['copy', '--to', `file://${cache}-${compression}?compression=${compression}`, built, flat])
      const dir = `${cache}-${compression}`
      const names = (await readdir(dir)).filter(n => n.endsWith('.narinfo'))
      assert.equal(names.length, 3)
      for (const n of names) {
        const text = await readFile(join(dir, n), 'utf8')
        const info = NarInfo.parse(text)
        assert.equal(info.toString(), text, n)
        assert.equal(`${info.hashPart}.narinfo`, n)
        assert.equal(info.compression, compression)
        const [pi] = JSON.parse(await nix.run('nix', ['path-info', '--json', info.storePath])) as Array<{ narHash: string, narSize: number, references: string[], deriver?: string, ca?: string }>
        assert.ok(pi !== undefined)
        assert.ok(info.narHash.equals(NixHash.parse(pi.narHash)))
        assert.equal(info.narSize, pi.narSize)
        assert.deepEqual(info.references.map(r => `/nix/store/${r}`).sort(), [...pi.references].sort())
        assert.equal(info.deriver === undefined ? undefined : `/nix/store/${info.deriver}`, pi.deriver)
        assert.equal(info.ca, pi.ca)
        // Nix's own writer and ours agree on the layout.
        const again = NarInfo.build({
          storePath: info.storePath, url: info.url, compression: info.compression, fileHash: info.fileHash, fileSize: info.fileSize,
          narHash: info.narHash, narSize: info.narSize, references: info.references, deriver: info.deriver, sigs: info.sigs, ca: info.ca
        })
        assert.equal(again.toString(), text, `build ${n}`)
      }
    }
  } finally {
    await nix.cleanup()
  }
})
