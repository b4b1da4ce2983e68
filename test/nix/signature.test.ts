import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { cp, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NixHash } from '../../src/nix/hash.ts'
import { NarInfo } from '../../src/nix/narinfo.ts'
import {
  fingerprint, generateSecretKey, narInfoFingerprint, parsePublicKey, parseSecretKey, publicKeyOf, sign, signNarInfo, verifyNarInfo, verifySignature
} from '../../src/nix/signature.ts'
import { makeNixEnv, nixSkip } from '../helpers/nix.ts'
import { EXAMPLE_NARINFO, PUBLIC_KEY, SIG1 } from '../helpers/vectors.ts'

// The throw-away key and vectors of the protocol reference §4.4.
const SECRET = 'test-cache-1:xlGieSvfvc3x1C+zOBfq0YMmfsGE1wTTzvPx5cBSTir29ZMcDK2jp/KR7e2d6nphQvyCzxLuUYZcGEGoZmHlWw=='
const PUBLIC = PUBLIC_KEY
const FP1 = '1;/nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt;sha256:1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq;224;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt,/nix/store/vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir'
const FP2 = '1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;'
const SIG2 = 'test-cache-1:xcgICfbCWwg7iD8kchUiDpFSCRK9IJxnAvuusABky1ukybI8g/hS2LgAmN2CiZIukFTKVEHzVDhGoJmweRrrBQ=='

const EXAMPLE = EXAMPLE_NARINFO
const NO_CA = EXAMPLE.replace(/^CA: .*\n/m, '')

function flipByte (sig: string, index = 10): string {
  const colon = sig.indexOf(':')
  const bytes = Buffer.from(sig.slice(colon + 1), 'base64')
  bytes[index]! ^= 0x01
  return `${sig.slice(0, colon)}:${bytes.toString('base64')}`
}

test('fingerprints fp1 and fp2 of §4.4', () => {
  assert.equal(fingerprint({
    storePath: '/nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt',
    narHash: 'sha256:1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq',
    narSize: 224,
    // Order and form (base name or full path) do not matter; duplicates collapse.
    references: ['/nix/store/vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir', 'i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt', 'vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir']
  }), FP1)
  assert.equal(narInfoFingerprint(NarInfo.parse(EXAMPLE)), FP1)
  // The NarHash is re-rendered as sha256:<nix32> whatever encoding it came in.
  assert.equal(fingerprint({
    storePath: '/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt',
    narHash: NixHash.parse('sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM='),
    narSize: 120,
    references: []
  }), FP2)
  assert.throws(() => fingerprint({ storePath: '/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt', narHash: NixHash.of('sha256', ''), narSize: 0, references: [] }),
    { name: 'FormatError', message: /NarSize is 0/ })
  assert.throws(() => fingerprint({ storePath: '/srv/x', narHash: NixHash.of('sha256', ''), narSize: 1, references: [] }),
    { name: 'FormatError', message: /not in the Nix store/ })
})

test('re-signing fp1/fp2 with the throw-away key reproduces sig1/sig2, and they verify', () => {
  assert.equal(sign(SECRET, FP1), SIG1)
  assert.equal(sign(parseSecretKey(SECRET), FP2), SIG2)
  assert.equal(publicKeyOf(SECRET), PUBLIC)
  assert.equal(verifySignature(SIG1, FP1, [PUBLIC]), 'valid')
  assert.equal(verifySignature(SIG2, FP2, [parsePublicKey(PUBLIC)]), 'valid')
  assert.equal(verifySignature(SIG1, FP2, [PUBLIC]), 'invalid')
  assert.equal(verifySignature(flipByte(SIG1), FP1, [PUBLIC]), 'invalid')
  assert.equal(verifySignature(flipByte(SIG1, 63), FP1, [PUBLIC]), 'invalid')
  assert.equal(verifySignature(SIG1, FP1 + ' ', [PUBLIC]), 'invalid')
  assert.equal(verifySignature(SIG1.replace('test-cache-1', 'other-1'), FP1, [PUBLIC]), 'untrusted-key')
  assert.equal(verifySignature(SIG1, FP1, []), 'untrusted-key')
  const short = `test-cache-1:${Buffer.alloc(63).toString('base64')}`
  assert.equal(verifySignature(short, FP1, [PUBLIC]), 'invalid')
  assert.equal(verifySignature('test-cache-1:!!!!', FP1, [PUBLIC]), 'invalid')
  assert.equal(verifySignature('no-colon', FP1, [PUBLIC]), 'untrusted-key')
  // The first trusted key with a name is the one used, as in Nix.
  const other = generateSecretKey('test-cache-1').public
  assert.equal(verifySignature(SIG1, FP1, [other, PUBLIC]), 'invalid')
  assert.equal(verifySignature(SIG1, FP1, [PUBLIC, other]), 'valid')
  assert.equal(verifySignature(SIG1, FP1, new Map([['test-cache-1', parsePublicKey(PUBLIC)]])), 'valid')
})

test('the other signed paths of §4.4 verify', () => {
  const cases: Array<[string, string, number, string]> = [
    ['/nix/store/gy454w1cxaq731grqwylhzf4pp9r5izh-hello.txt', 'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw', 120,
      'bsbgpvzYOZTwzGVIsSJGcALzk1APcIkbaixZI0Y+BVCXvnTXxI4+YWhb8H26bTOgVVezKjraE2wvdeKvHPY7Bg=='],
    ['/nix/store/vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir', 'sha256:1w6df45nyvb9v1mhz027qdc34wapalr0lvbpbfpmsvrkg17vb7fn', 720,
      'FZ91uJPNxfDGm+vFPNwuhYa+S2+/ALLupcUPMIIeC/m3jObou2NIgdac1b06/tnPKXvBj3qCZokEFKwSIJE6AQ==']
  ]
  for (const [storePath, narHash, narSize, sig] of cases) {
    const fp = fingerprint({ storePath, narHash, narSize, references: [] })
    assert.equal(verifySignature(`test-cache-1:${sig}`, fp, [PUBLIC]), 'valid', storePath)
    assert.equal(sign(SECRET, fp), `test-cache-1:${sig}`)
  }
})

test('verifyNarInfo follows Nix: unknown names ignored, bad payloads recorded, CA claims count', () => {
  const signed = verifyNarInfo(NarInfo.parse(NO_CA), [PUBLIC])
  assert.deepEqual(signed, { valid: true, validKeyNames: ['test-cache-1'], contentAddressed: false, problems: [] })

  const untrusted = verifyNarInfo(NarInfo.parse(NO_CA), [generateSecretKey('someone-else').public])
  assert.deepEqual(untrusted, { valid: false, validKeyNames: [], contentAddressed: false, problems: [] })

  const flipped = verifyNarInfo(NarInfo.parse(NO_CA.replace(SIG1, flipByte(SIG1))), [PUBLIC])
  assert.equal(flipped.valid, false)
  assert.match(flipped.problems.join(), /signature by 'test-cache-1' does not match the fingerprint/)

  // A 63-byte payload under a trusted name: Nix throws "signature is not valid"; we record it and go on.
  const short = `test-cache-1:${Buffer.alloc(63).toString('base64')}`
  const withShort = verifyNarInfo(NarInfo.parse(NO_CA).withSigs([short]), [PUBLIC])
  assert.equal(withShort.valid, true)
  assert.deepEqual(withShort.validKeyNames, ['test-cache-1'])
  assert.match(withShort.problems.join(), /is 63 bytes, not 64/)
  const onlyShort = verifyNarInfo(NarInfo.parse(NO_CA.replace(SIG1, short)), [PUBLIC])
  assert.equal(onlyShort.valid, false)

  // Changing a signed field breaks the signature; changing the transport fields does not.
  const refsChanged = NarInfo.parse(NO_CA.replace(' vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir', ''))
  assert.equal(verifyNarInfo(refsChanged, [PUBLIC]).valid, false)
  const moved = NarInfo.parse(NO_CA).withTransport({ url: 'nar/elsewhere.nar.zst', compression: 'zstd' })
  assert.equal(verifyNarInfo(moved, [PUBLIC]).valid, true)

  // The example's CA claim (text, two references) proves the path without any signature.
  const unsigned = NarInfo.parse(EXAMPLE.replace(`Sig: ${SIG1}\n`, ''))
  assert.deepEqual(verifyNarInfo(unsigned, []), { valid: true, validKeyNames: [], contentAddressed: true, problems: [] })
  // A false claim is reported and falls back to signatures.
  const falseClaim = NarInfo.parse(NO_CA + 'CA: text:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\n')
  const r = verifyNarInfo(falseClaim, [PUBLIC])
  assert.deepEqual([r.valid, r.contentAddressed, r.validKeyNames], [true, false, ['test-cache-1']])
  assert.match(r.problems.join(), /claims to be content-addressed/)
})

test('generated keys are in Nix\'s format and work', () => {
  const { secret, public: pub } = generateSecretKey('narswarm-test-1')
  assert.match(secret, /^narswarm-test-1:[A-Za-z0-9+/]{86}==$/)
  assert.match(pub, /^narswarm-test-1:[A-Za-z0-9+/]{43}=$/)
  assert.equal(publicKeyOf(secret), pub)
  const sk = parseSecretKey(secret)
  assert.equal(sk.text, secret)
  assert.equal(sk.publicKey.text, pub)
  assert.equal(verifySignature(sign(sk, FP1), FP1, [pub]), 'valid')
  assert.equal(parsePublicKey(`${pub}\n`).text, pub, 'key files may end in a newline')
})

test('malformed keys are rejected with clear messages', () => {
  const seedAndPub = Buffer.from(SECRET.slice(SECRET.indexOf(':') + 1), 'base64')
  const wrongHalf = Buffer.from(seedAndPub); wrongHalf[40]! ^= 1
  const cases: Array<[() => unknown, string, RegExp]> = [
    [() => parsePublicKey(''), 'FormatError', /not of the form '<name>:<base64>'/],
    [() => parsePublicKey('9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5Vs='), 'FormatError', /not of the form/],
    [() => parsePublicKey(':9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5Vs='), 'FormatError', /public key has an empty name/],
    [() => parsePublicKey('k:'), 'FormatError', /'k' has no key material/],
    [() => parsePublicKey('k:9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5V'), 'FormatError', /'k' is not valid base64/],
    [() => parsePublicKey('k:9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5V$='), 'FormatError', /'k' is not valid base64/],
    [() => parsePublicKey('k:AAAA'), 'SignatureError', /public key 'k' is 3 bytes, an ed25519 public key is 32/],
    [() => parsePublicKey(SECRET), 'SignatureError', /is 64 bytes, an ed25519 public key is 32/],
    [() => parseSecretKey(PUBLIC), 'SignatureError', /secret key 'test-cache-1' is 32 bytes, an ed25519 secret key is 64/],
    [() => parseSecretKey(':' + SECRET.split(':')[1]), 'FormatError', /secret key has an empty name/],
    [() => parseSecretKey('test-cache-1:' + wrongHalf.toString('base64')), 'SignatureError', /public half does not belong to its seed/],
    [() => sign('nonsense', FP1), 'FormatError', /^secret key is not of the form/],
    [() => generateSecretKey(''), 'FormatError', /must be non-empty/],
    [() => generateSecretKey('a:b'), 'FormatError', /must not contain ':'/],
    [() => verifySignature(SIG1, FP1, ['junk']), 'FormatError', /not of the form/]
  ]
  for (const [fn, name, message] of cases) assert.throws(fn, { name, message }, String(message))
  // Secret material never appears in messages.
  for (const bad of [SECRET.split(':')[1]!, SECRET.slice(0, -4), SECRET.replace('xlG', 'x!G')]) {
    assert.throws(() => parseSecretKey(bad), (err: Error) => !err.message.includes('xlGie'))
  }
})

test('against Nix 2.8: Nix\'s signatures verify, our fingerprints match, our signatures are accepted', { skip: nixSkip() }, async (t) => {
  const nix = await makeNixEnv()
  try {
    const nonce = randomBytes(8).toString('hex')
    // Nix's key, generated by Nix.
    const nixKeyName = `nix-key-${nonce}`
    const nixSecret = (await nix.run('nix', ['key', 'generate-secret', '--key-name', nixKeyName])).trim()
    const nixSecretFile = join(nix.dir, 'nix.sec')
    await writeFile(nixSecretFile, nixSecret)
    const nixPublic = (await nix.run('nix', ['key', 'convert-secret-to-public'], { input: nixSecret })).trim()
    assert.equal(publicKeyOf(nixSecret), nixPublic)

    // Our key, generated by us and read by Nix.
    const ours = generateSecretKey(`narswarm-${nonce}`)
    assert.equal((await nix.run('nix', ['key', 'convert-secret-to-public'], { input: ours.secret })).trim(), ours.public)

    const file = join(nix.dir, `leaf-${nonce}.txt`)
    await writeFile(file, `leaf ${nonce}\n`)
    const leaf = (await nix.run('nix-store', ['--add', file])).trim()
    const drv = join(nix.dir, 'drv.nix')
    await writeFile(drv, `let leaf = builtins.storePath "${leaf}"; in builtins.derivation {
      name = "root-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo \${leaf} > $out; echo self $out >> $out" ]; }`)
    const built = (await nix.run('nix-build', [drv, '--no-out-link'])).trim()

    const cache = join(nix.dir, 'cache')
    await nix.run('nix', ['copy', '--to', `file://${cache}?compression=none&secret-key=${nixSecretFile}`, built])
    const names = (await readdir(cache)).filter(n => n.endsWith('.narinfo'))
    assert.equal(names.length, 2)
    let root: NarInfo | undefined
    for (const n of names) {
      const info = NarInfo.parse(await readFile(join(cache, n), 'utf8'))
      assert.equal(info.sigs.length, 1)
      const result = verifyNarInfo(info, [nixPublic])
      assert.deepEqual(result.validKeyNames, [nixKeyName], n)
      assert.ok(result.valid)
      // Ed25519 is deterministic, so re-signing our fingerprint reproduces Nix's signature iff the fingerprints are equal.
      assert.equal(sign(nixSecret, narInfoFingerprint(info)), info.sigs[0])
      if (info.storePath === built) root = info
    }
    assert.ok(root !== undefined)
    assert.equal(root.ca, undefined, 'a built output is input-addressed, so only its signature can vouch for it')
    assert.deepEqual([...root.references].sort(), [root.storePathParsed.baseName, leaf.slice('/nix/store/'.length)].sort(), 'self-reference included')

    // Replace Nix's signature by ours, in a copy of the cache (Nix caches narinfos per cache URL).
    const ourCache = join(nix.dir, 'our-cache')
    await cp(cache, ourCache, { recursive: true })
    const resigned = signNarInfo(NarInfo.build({
      storePath: root.storePath, url: root.url, compression: root.compression, fileHash: root.fileHash, fileSize: root.fileSize,
      narHash: root.narHash, narSize: root.narSize, references: root.references, deriver: root.deriver, sigs: []
    }), ours.secret)
    assert.deepEqual(resigned.sigs, [sign(ours.secret, narInfoFingerprint(root))])
    await writeFile(join(ourCache, `${root.hashPart}.narinfo`), resigned.toString())
    const verify = (store: string, key: string) => nix.tryRun('nix', ['store', 'verify', '--store', `file://${store}`, '--trusted-public-keys', key, built])
    assert.equal((await verify(ourCache, ours.public)).code, 0, 'Nix accepts our signature')
    assert.notEqual((await verify(cache, ours.public)).code, 0, 'Nix\'s signature is not ours')
    assert.notEqual((await verify(ourCache, nixPublic)).code, 0, 'ours is not Nix\'s')

    const tampered = join(nix.dir, 'tampered-cache')
    await cp(cache, tampered, { recursive: true })
    await writeFile(join(tampered, `${root.hashPart}.narinfo`), resigned.withTransport({ url: root.url, compression: 'none' }).toString()
      .replace(resigned.sigs[0]!, flipByte(resigned.sigs[0]!)))
    assert.notEqual((await verify(tampered, ours.public)).code, 0, 'Nix rejects a flipped byte')

    // Substitute for real, into a fresh store, with require-sigs on.
    const fresh = `local?root=${join(nix.dir, 'fresh-store')}`
    const untrusted = await nix.tryRun('nix', ['copy', '--from', `file://${ourCache}`, '--to', fresh, '--trusted-public-keys', nixPublic, built])
    assert.notEqual(untrusted.code, 0)
    assert.match(untrusted.stderr, /signature/)
    await nix.run('nix', ['copy', '--from', `file://${ourCache}`, '--to', fresh, '--trusted-public-keys', ours.public, built])
    const [info] = JSON.parse(await nix.run('nix', ['path-info', '--store', fresh, '--json', '--sigs', built])) as Array<{ signatures?: string[] }>
    assert.deepEqual(info?.signatures, resigned.sigs)
  } finally {
    await nix.cleanup()
  }
})
