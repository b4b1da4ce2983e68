/**
 * Store paths for commands that take many (`publish`, `cache pin`/`unpin`/`import`): the
 * operands plus `--paths-from FILE` (`-` for standard input), one path per line, blank lines and
 * `#` comments ignored — so a list of any length never has to fit on a command line.
 */
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { ConfigError } from '../errors.ts'
import type { OptionSpec } from './args.ts'

export const PATHS_FROM_OPTION: OptionSpec = {
  type: 'string',
  multiple: true,
  value: 'FILE',
  help: "read store paths from FILE, one per line ('-': standard input)"
}

/** The operands, then the paths of each `--paths-from` file, in order. */
export async function readPathList (operands: readonly string[], files: readonly string[], stdin: NodeJS.ReadableStream = process.stdin): Promise<string[]> {
  const paths = [...operands]
  for (const file of files) {
    const input = file === '-' ? stdin : createReadStream(file)
    try {
      for await (const line of createInterface({ input, crlfDelay: Infinity })) {
        const path = line.trim()
        if (path !== '' && !path.startsWith('#')) paths.push(path)
      }
    } catch (err) {
      throw new ConfigError(`--paths-from ${file}: ${(err as Error).message}`)
    }
  }
  return paths
}
