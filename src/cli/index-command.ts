/**
 * `narswarm index export DIR` / `narswarm index import DIR`: the configured mapper's index as
 * static files and back (format in src/publish/index-files.ts and docs/index-formats.md).
 */
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError } from '../errors.ts'
import { silentLogger } from '../log.ts'
import { openMapper } from '../registry.ts'
import { exportIndex, importIndex } from '../publish/index-files.ts'
import { loadConfig } from './config.ts'
import { readSignKeys } from './keys.ts'

export const INDEX_USAGE = `Usage:
  narswarm index export DIR [--sign-key FILE]… [--mapper SPEC]
      writes the index (narinfos and locators) as static files under DIR/narswarm/v1/, with a
      SHA256SUMS manifest signed by each --sign-key. Serve DIR with any web server and point
      another narswarm at it with --mapper http+https://host/path-to-DIR
  narswarm index import DIR [--trusted-public-keys KEY]… [--unsigned] [--mapper SPEC]
      records an export into the mapper, after checking every file against the manifest and the
      manifest's signature against the trusted keys (--unsigned accepts an unsigned export)
Common: --config FILE, --state-dir DIR, --mapper SPEC (default sqlite: in the state directory;
the first one is used)
`

export async function indexCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  if (sub !== 'export' && sub !== 'import') {
    process.stderr.write(sub === undefined || sub === 'help' || sub === '--help' ? INDEX_USAGE : `narswarm index: unknown command '${sub}'\n\n${INDEX_USAGE}`)
    return sub === 'help' || sub === '--help' ? 0 : 2
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      'sign-key': { type: 'string', multiple: true },
      'trusted-public-keys': { type: 'string', multiple: true },
      unsigned: { type: 'boolean' },
      mapper: { type: 'string', multiple: true },
      config: { type: 'string' },
      'state-dir': { type: 'string' }
    }
  })
  if (positionals.length !== 1) throw new ConfigError(`index ${sub} takes one directory`)
  const dir = resolve(positionals[0]!)
  const config = loadConfig({ flags: { config: values.config, 'state-dir': values['state-dir'], mapper: values.mapper, 'trusted-public-keys': values['trusted-public-keys'] }, env: process.env })
  const mapper = await openMapper(config.mappers[0]!, { log: silentLogger(), stateDir: config.stateDir })
  try {
    if (sub === 'export') {
      const keys = await readSignKeys(values['sign-key'] ?? [])
      const r = await exportIndex(mapper, dir, keys)
      process.stdout.write(`exported ${r.entries} NARs, ${r.narInfos} narinfos, ${r.files} files to ${dir}/narswarm/v1${keys.length === 0 ? ' (manifest not signed: no --sign-key)' : ''}\n`)
    } else {
      if (values.unsigned !== true && values['trusted-public-keys'] === undefined) {
        throw new ConfigError('index import needs --trusted-public-keys KEY (the key that signed the export), or --unsigned to accept it unchecked')
      }
      const r = await importIndex(dir, mapper, { trustedKeys: values.unsigned === true ? [] : config.trustedPublicKeys })
      process.stdout.write(`imported ${r.narInfos} narinfos, ${r.locators} locators into ${mapper.name}${r.signedBy.length > 0 ? ` (manifest signed by ${r.signedBy.join(', ')})` : ''}\n`)
    }
  } finally {
    await mapper.close?.()
  }
  return 0
}
