/**
 * TLS trust as Nix has it: an upstream over HTTPS whose certificate authority is in the machine's
 * store (here moved with SSL_CERT_FILE, as curl and OpenSSL allow) or in NIX_SSL_CERT_FILE, and not
 * among the roots Node bundles. The certificates are made by the `openssl` program for the test.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCacheServer, type CacheServer } from '../helpers/cache-server.ts'
import { makeEntry, writeSignedCache } from '../helpers/signed-cache.ts'
import { startNarswarm } from '../helpers/narswarm.ts'
import { certificatesSkip, makeCertificates } from '../helpers/certificates.ts'

describe('TLS: the certificates Nix trusts', { skip: certificatesSkip }, () => {
  let dir: string
  let ca: string
  let upstream: CacheServer
  let publicKey: string
  const entry = makeEntry('private-tls')
  // Nothing of this machine's own setup counts: no extra certificates for Node, an empty system
  // directory; each test says where the authority is.
  const bare = { NODE_EXTRA_CA_CERTS: undefined, SSL_CERT_DIR: '', SSL_CERT_FILE: undefined, NIX_SSL_CERT_FILE: undefined }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narswarm-tls-'))
    const certs = makeCertificates(dir)
    ca = certs.ca
    bare.SSL_CERT_DIR = join(dir, 'empty')
    await mkdir(bare.SSL_CERT_DIR)
    ;({ publicKey } = await writeSignedCache(join(dir, 'cache'), [entry]))
    upstream = await startCacheServer(join(dir, 'cache'), { tls: certs.tls })
  })
  after(async () => {
    await upstream?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const narinfoThrough = async (env: NodeJS.ProcessEnv): Promise<{ status: number, narStatus?: number, stderr: string }> => {
    const narswarm = await startNarswarm(['--upstream', `${upstream.url}?trusted-public-keys=${publicKey}`], { env: { ...bare, ...env } })
    try {
      const res = await fetch(`${narswarm.url}/${entry.hashPart}.narinfo`)
      const text = await res.text()
      if (res.status !== 200) return { status: res.status, stderr: narswarm.stderr() }
      const nar = await fetch(`${narswarm.url}/${/^URL: (.*)$/m.exec(text)![1]}`)
      assert.deepEqual(Buffer.from(await nar.arrayBuffer()), entry.nar)
      return { status: res.status, narStatus: nar.status, stderr: narswarm.stderr() }
    } finally {
      assert.equal(await narswarm.stop(), 0)
    }
  }

  test('an authority only in the system store (SSL_CERT_FILE): trusted, as by Nix; without it the upstream fails', async () => {
    assert.deepEqual(await narinfoThrough({ SSL_CERT_FILE: ca }).then(r => [r.status, r.narStatus]), [200, 200])
    const unknown = await narinfoThrough({ SSL_CERT_FILE: join(dir, 'san.cnf') })
    assert.equal(unknown.status, 502, 'an untrusted certificate is a failure of the upstream, not absence')
    assert.match(unknown.stderr, /certificate/i)
  })

  test('NIX_SSL_CERT_FILE, where Nix looks first: trusted; one that cannot be read is a warning', async () => {
    assert.equal((await narinfoThrough({ NIX_SSL_CERT_FILE: ca })).status, 200)
    const missing = await narinfoThrough({ NIX_SSL_CERT_FILE: join(dir, 'absent.pem') })
    assert.equal(missing.status, 502)
    assert.match(missing.stderr, /warning: NIX_SSL_CERT_FILE .*absent\.pem cannot be read/)
  })
})
