/**
 * A real S3-protocol server on 127.0.0.1 for tests: s3rver (from npm) over a temporary directory,
 * with one bucket. When the package is not installed, `skip` holds the reason and the tests that
 * need it are skipped with that reason printed; any other failure to start is a test failure.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

interface S3rverInstance { run: () => Promise<{ address: string, port: number }>, close: () => Promise<void> }
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance

export interface S3Server {
  /** `http://127.0.0.1:PORT`, empty when skipped. */
  endpoint: string
  skip: string | false
  close: () => Promise<void>
}

export async function startS3Server (bucket: string): Promise<S3Server> {
  // s3rver checks signatures against its one built-in key pair.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'
  const dir = await mkdtemp(join(tmpdir(), 'narswarm-s3-'))
  let server: S3rverInstance | undefined
  try {
    // Through a variable: the package ships no types, and a missing package only skips the tests.
    const name = 's3rver'
    const S3rver = (await import(name) as { default: S3rverClass }).default
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket }] })
    const { port } = await server.run()
    return { endpoint: `http://127.0.0.1:${port}`, skip: false, close: async () => { await server!.close(); await rm(dir, { recursive: true, force: true }) } }
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    // Only a missing package is a reason to skip; a server that is there and fails is a failure.
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
    const skip = `no local S3 server: ${(err as Error).message}`
    console.log(`# skipping S3 tests: ${skip}`)
    return { endpoint: '', skip, close: async () => {} }
  }
}
