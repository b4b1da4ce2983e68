/**
 * The one command-line parser every subcommand goes through: `util.parseArgs` under an option table
 * that also feeds the help text and the shell completion. Whatever is wrong with a command line
 * becomes a UsageError with one line of text, a "did you mean" where a known name is near, and exit
 * status 2 (`main.ts` prints it); nothing here prints or exits.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { UsageError } from '../errors.ts'

export interface OptionSpec {
  type: 'string' | 'boolean'
  multiple?: boolean
  short?: string
  /** The value's placeholder in help: FILE, N, URL, SPEC… (string options). */
  value?: string
  /** One line (or a few sentences) for the help text. */
  help: string
  /** Shown as the default in help. */
  default?: string
  /** A heading the option is listed under in help ('Which paths', 'How'). */
  group?: string
}

export type OptionTable = Record<string, OptionSpec>

export type Values = Record<string, string | string[] | boolean | undefined>

export interface Parsed {
  values: Values
  positionals: string[]
}

/**
 * Parses `argv` against `options` for `command` (e.g. 'publish', 'keys generate'). `--help`/`-h` is
 * always accepted and reported as `values.help`. Positionals beyond `maxPositionals` are an error.
 */
export function parseCommandLine (command: string, argv: string[], options: OptionTable, maxPositionals = 0): Parsed {
  const config: ParseArgsOptionsConfig = { help: { type: 'boolean', short: 'h' } }
  for (const [name, spec] of Object.entries(options)) {
    config[name] = { type: spec.type, ...(spec.multiple === true ? { multiple: true } : {}), ...(spec.short === undefined ? {} : { short: spec.short }) }
  }
  let parsed: Parsed
  try {
    parsed = parseArgs({ args: argv, options: config, strict: true, allowPositionals: true }) as Parsed
  } catch (err) {
    throw new UsageError(`${command}: ${usageMessage(err as Error & { code?: string }, Object.keys(options))}`)
  }
  if (parsed.values.help !== true && parsed.positionals.length > maxPositionals) {
    const extra = parsed.positionals[maxPositionals]!
    const near = extra.startsWith('-') ? '' : didYouMean(extra, Object.keys(options).map(o => `--${o}`))
    throw new UsageError(`${command}: unexpected argument '${extra}'${near}`)
  }
  return parsed
}

/** parseArgs's messages, shortened to one line and given a suggestion. */
function usageMessage (err: Error & { code?: string }, known: string[]): string {
  const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? ''
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const name = quoted.replace(/=.*$/, '')
    return `unknown option '${name}'${name.startsWith('--') ? didYouMean(name, known.map(o => `--${o}`)) : ''}`
  }
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const name = /'(-[^' ]+)/.exec(err.message)?.[1] ?? quoted
    return /argument missing/.test(err.message) ? `option '${name}' needs a value` : `option '${name}' takes no value`
  }
  return err.message.split('\n')[0]!
}

/** " (did you mean 'x'?)" when some candidate is near `word`, else ''. */
export function didYouMean (word: string, candidates: Iterable<string>): string {
  const best = nearest(word, candidates)
  return best === undefined ? '' : ` (did you mean '${best}'?)`
}

/** The candidate nearest to `word` by edit distance, if near enough to be a likely typo. */
export function nearest (word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  const w = word.toLowerCase()
  for (const c of candidates) {
    const d = c.toLowerCase().startsWith(w) && w.length >= 3 ? 0.5 : editDistance(w, c.toLowerCase())
    if (d < bestDistance) { best = c; bestDistance = d }
  }
  return bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined
}

/** Levenshtein distance with adjacent transpositions counted as one edit. */
function editDistance (a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1)
    }
  }
  return d[a.length]![b.length]!
}

/** The value of a string option, or undefined. */
export function str (values: Values, name: string): string | undefined {
  const v = values[name]
  return typeof v === 'string' ? v : undefined
}

/** The values of a repeatable option, or []. */
export function list (values: Values, name: string): string[] {
  const v = values[name]
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : []
}
