/**
 * Which TLS certificates narswarm trusts: those Nix trusts. Node trusts only the Mozilla roots it
 * bundles (and NODE_EXTRA_CA_CERTS), where Nix, through curl, trusts the machine's store — so a
 * cache behind a company's own certificate authority, or behind a proxy that inspects TLS, works
 * for Nix and would fail for narswarm ("unable to get local issuer certificate"). The system store
 * (OpenSSL's default file and directory, which SSL_CERT_FILE and SSL_CERT_DIR move, as they do for
 * curl) and Nix's own NIX_SSL_CERT_FILE are added to Node's defaults, once, before any connection.
 */
import { readFileSync } from 'node:fs'
import tls from 'node:tls'

const PEM = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Adds the system's and NIX_SSL_CERT_FILE's certificates to Node's; returns what could not be read. */
export function trustSystemCertificates (env: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = []
  const certificates = new Set(tls.getCACertificates('default'))
  const before = certificates.size
  for (const c of tls.getCACertificates('system')) certificates.add(c)
  const nixFile = env.NIX_SSL_CERT_FILE
  if (nixFile !== undefined && nixFile !== '') {
    try {
      const found = readFileSync(nixFile, 'utf8').match(PEM) ?? []
      if (found.length === 0) problems.push(`NIX_SSL_CERT_FILE ${nixFile} holds no PEM certificate`)
      for (const c of found) certificates.add(c.replace(/\r\n/g, '\n') + '\n')
    } catch (err) {
      problems.push(`NIX_SSL_CERT_FILE ${nixFile} cannot be read: ${(err as Error).message}`)
    }
  }
  if (certificates.size > before) tls.setDefaultCACertificates([...certificates])
  return problems
}
