/**
 * `narswarm index export DIR` / `narswarm index import DIR`: the configured mapper's index as
 * static files and back (format in src/publish/index-files.ts and docs/index-formats.md).
 */
import { resolve } from 'node:path'
import { UsageError } from '../errors.ts'
import { didYouMean, list, parseCommandLine } from './args.ts'
import type { Subcommand } from './commands.ts'
import { silentLogger } from '../log.ts'
import { openMapper } from '../registry.ts'
import { exportIndex, importIndex } from '../publish/index-files.ts'
import { loadConfig, settingFlags, settingOptions } from './config.ts'
import { readSignKeys } from './keys.ts'

const COMMON = settingOptions(['config', 'state-dir', 'mapper'])
COMMON.mapper = { ...COMMON.mapper!, help: 'the index to export from or import into (the first one is used)' }

export const INDEX_SUBCOMMANDS = {
  export: {
    usage: 'DIR [--sign-key FILE]… [--mapper SPEC]',
    summary: 'writes the index (narinfos and locators) as static files under DIR/narswarm/v1/, with a SHA256SUMS manifest signed by each --sign-key. Serve DIR with any web server and point another narswarm at it with --mapper http+https://host/path-to-DIR',
    options: {
      'sign-key': { type: 'string', multiple: true, value: 'FILE', help: 'a Nix secret key file that signs the manifest' },
      ...COMMON
    }
  },
  import: {
    usage: 'DIR [--trusted-public-keys KEY]… [--unsigned] [--mapper SPEC]',
    summary: "records an export into the mapper, after checking every file against the manifest and the manifest's signature against the trusted keys (--unsigned accepts an unsigned export)",
    options: {
      'trusted-public-keys': { type: 'string', multiple: true, value: 'KEY', help: 'a key one of which must have signed the manifest' },
      unsigned: { type: 'boolean', help: 'accept an export whose manifest is not signed' },
      ...COMMON
    }
  }
} satisfies Record<string, Subcommand>

export async function indexCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  if (sub !== 'export' && sub !== 'import') {
    throw new UsageError(sub === undefined ? 'index: name a command: export or import' : `index: unknown command '${sub}'${didYouMean(sub, Object.keys(INDEX_SUBCOMMANDS))}`)
  }
  const { values, positionals } = parseCommandLine(`index ${sub}`, rest, INDEX_SUBCOMMANDS[sub].options, 1)
  if (positionals.length !== 1) throw new UsageError(`index ${sub} takes one directory`)
  const dir = resolve(positionals[0]!)
  const config = loadConfig({ flags: settingFlags(values, ['config', 'state-dir', 'mapper', 'trusted-public-keys']), env: process.env })
  const mapper = await openMapper(config.mappers[0]!, { log: silentLogger(), stateDir: config.stateDir })
  try {
    if (sub === 'export') {
      const keys = await readSignKeys(list(values, 'sign-key'))
      const r = await exportIndex(mapper, dir, keys)
      process.stdout.write(`exported ${r.entries} NARs, ${r.narInfos} narinfos, ${r.files} files to ${dir}/narswarm/v1${keys.length === 0 ? ' (manifest not signed: no --sign-key)' : ''}\n`)
    } else {
      if (values.unsigned !== true && values['trusted-public-keys'] === undefined) {
        throw new UsageError('index import needs --trusted-public-keys KEY (the key that signed the export), or --unsigned to accept it unchecked')
      }
      const r = await importIndex(dir, mapper, { trustedKeys: values.unsigned === true ? [] : config.trustedPublicKeys })
      process.stdout.write(`imported ${r.narInfos} narinfos, ${r.locators} locators into ${mapper.name}${r.signedBy.length > 0 ? ` (manifest signed by ${r.signedBy.join(', ')})` : ''}\n`)
    }
  } finally {
    await mapper.close?.()
  }
  return 0
}
