/**
 * `narswarm keys`: ed25519 signing keys in Nix's own format (`name:base64`), interchangeable with
 * `nix key generate-secret` / `nix-store --generate-binary-cache-key`. A secret key file is
 * written with mode 0600 and never over an existing file.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ConfigError } from '../errors.ts'
import { generateSecretKey, parseSecretKey, publicKeyOf, type SecretKey } from '../nix/signature.ts'

export const KEYS_USAGE = `Usage:
  narswarm keys generate --name NAME [--secret-file FILE] [--public-file FILE]
      makes a new key pair. Without --secret-file the secret key goes to standard output;
      with it, the file is created with mode 0600 (never overwritten) and the public key is
      printed. NAME is the key's name in signatures, e.g. cache.example.org-1.
  narswarm keys public FILE
      prints the public key of a secret key file ('-' reads standard input), for
      trusted-public-keys.
`

export async function keysCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  if (sub === 'generate') {
    const { values } = parseArgs({ args: rest, options: { name: { type: 'string' }, 'secret-file': { type: 'string' }, 'public-file': { type: 'string' } } })
    const name = values.name
    if (name === undefined || name === '') throw new ConfigError('keys generate needs --name NAME (e.g. cache.example.org-1)')
    if (!/^[A-Za-z0-9._+-]+$/.test(name)) throw new ConfigError(`key name '${name}' may only contain letters, digits and . _ + -`)
    const pair = generateSecretKey(name)
    if (values['secret-file'] === undefined) {
      process.stdout.write(`${pair.secret}\n`)
    } else {
      await writeKey(values['secret-file'], pair.secret, 0o600)
      process.stdout.write(`${pair.public}\n`)
    }
    if (values['public-file'] !== undefined) await writeKey(values['public-file'], pair.public, 0o644)
    return 0
  }
  if (sub === 'public') {
    const { positionals } = parseArgs({ args: rest, allowPositionals: true, options: {} })
    if (positionals.length !== 1) throw new ConfigError('keys public takes one secret key file (or - for standard input)')
    const file = positionals[0]!
    let text: string
    try {
      text = file === '-' ? await readStdin() : await readFile(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`)
    }
    try {
      process.stdout.write(`${publicKeyOf(parseSecretKey(text.trim()))}\n`)
    } catch (err) {
      throw new ConfigError(`${file} is not a Nix secret key: ${(err as Error).message}`)
    }
    return 0
  }
  process.stderr.write(sub === undefined || sub === 'help' || sub === '--help' ? KEYS_USAGE : `narswarm keys: unknown command '${sub}'\n\n${KEYS_USAGE}`)
  return sub === 'help' || sub === '--help' ? 0 : 2
}

/** The secret keys of `--sign-key` files, each checked; a file that cannot be used is a ConfigError. */
export async function readSignKeys (files: readonly string[]): Promise<SecretKey[]> {
  const keys: SecretKey[] = []
  for (const file of files) {
    let text: string
    try { text = (await readFile(file, 'utf8')).trim() } catch (err) { throw new ConfigError(`--sign-key ${file}: ${(err as Error).message}`) }
    try { keys.push(parseSecretKey(text)) } catch (err) { throw new ConfigError(`--sign-key ${file}: not a Nix secret key: ${(err as Error).message}`) }
  }
  return keys
}

async function writeKey (file: string, text: string, mode: number): Promise<void> {
  try {
    await writeFile(file, `${text}\n`, { mode, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ConfigError(`${file} exists already; not overwriting a key`)
    throw new ConfigError(`cannot write ${file}: ${(err as Error).message}`)
  }
}

async function readStdin (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text
}
