/**
 * A certificate authority of a test's own and a certificate it signed for 127.0.0.1, made by the
 * `openssl` program: for HTTPS servers that only a client told about that authority trusts.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { findBinary } from '../../src/nix/compression.ts'

const OPENSSL = findBinary('openssl')

/** Why the certificates cannot be made here, or false (for `skip`). */
export const certificatesSkip = OPENSSL === false ? 'openssl is not installed (apt-get install openssl)' : false

export interface TestCertificates {
  /** The authority's certificate file (PEM). */
  ca: string
  /** The server's key and certificate (PEM text), for `https.createServer`. */
  tls: { key: string, cert: string }
}

/** Makes the authority and the server certificate in `dir`. */
export function makeCertificates (dir: string): TestCertificates {
  const run = (...args: string[]): void => { execFileSync(OPENSSL as string, args, { cwd: dir, stdio: 'ignore' }) }
  writeFileSync(join(dir, 'san.cnf'), 'subjectAltName = IP:127.0.0.1\n')
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=narswarm test CA')
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.cnf')
  return { ca: join(dir, 'ca.pem'), tls: { key: readFileSync(join(dir, 'server.key'), 'utf8'), cert: readFileSync(join(dir, 'server.pem'), 'utf8') } }
}
