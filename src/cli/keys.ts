/**
 * `narswarm keys`: ed25519 signing keys in Nix's own format (`name:base64`), interchangeable with
 * `nix key generate-secret` / `nix-store --generate-binary-cache-key`. A secret key file is
 * written with mode 0600 and never over an existing file.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { ConfigError, UsageError } from '../errors.ts'
import { didYouMean, parseCommandLine, str } from './args.ts'
import type { Subcommand } from './commands.ts'
import { generateSecretKey, parseSecretKey, publicKeyOf, type SecretKey } from '../nix/signature.ts'

export const KEYS_SUBCOMMANDS = {
  generate: {
    usage: '--name NAME [--secret-file FILE] [--public-file FILE]',
    summary: 'makes a new key pair. Without --secret-file the secret key goes to standard output; with it, the file is created with mode 0600 (never overwritten) and the public key is printed.',
    options: {
      name: { type: 'string', value: 'NAME', help: "the key's name in signatures, e.g. cache.example.org-1" },
      'secret-file': { type: 'string', value: 'FILE', help: 'write the secret key here (mode 0600, never overwritten)' },
      'public-file': { type: 'string', value: 'FILE', help: 'write the public key here too' }
    }
  },
  public: {
    usage: 'FILE',
    summary: "prints the public key of a secret key file ('-' reads standard input), for trusted-public-keys"
  }
} satisfies Record<string, Subcommand>

export async function keysCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  if (sub === 'generate') {
    const { values } = parseCommandLine('keys generate', rest, KEYS_SUBCOMMANDS.generate.options)
    const name = str(values, 'name')
    if (name === undefined || name === '') throw new UsageError('keys generate needs --name NAME (e.g. cache.example.org-1)')
    if (!/^[A-Za-z0-9._+-]+$/.test(name)) throw new UsageError(`keys generate: key name '${name}' may only contain letters, digits and . _ + -`)
    const pair = generateSecretKey(name)
    const secretFile = str(values, 'secret-file')
    const publicFile = str(values, 'public-file')
    if (secretFile === undefined) {
      process.stdout.write(`${pair.secret}\n`)
    } else {
      await writeKey(secretFile, pair.secret, 0o600)
      process.stdout.write(`${pair.public}\n`)
    }
    if (publicFile !== undefined) await writeKey(publicFile, pair.public, 0o644)
    return 0
  }
  if (sub === 'public') {
    const { positionals } = parseCommandLine('keys public', rest, {}, 1)
    if (positionals.length !== 1) throw new UsageError('keys public takes one secret key file (or - for standard input)')
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
  throw new UsageError(sub === undefined ? 'keys: name a command: generate or public' : `keys: unknown command '${sub}'${didYouMean(sub, Object.keys(KEYS_SUBCOMMANDS))}`)
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
