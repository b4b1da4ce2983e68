/**
 * Help text, rendered from the command table (`commands.ts`), the settings table (`config.ts`) and
 * the plug-ins' own `summary` fields (`registry.ts`): nothing in it is a hand-kept list. Two
 * aligned columns; a name too long for the first column puts its text on the next line instead of
 * running into it.
 */
import type { OptionSpec, OptionTable } from './args.ts'
import type { Command } from './commands.ts'
import { pluginSummaries } from '../registry.ts'

const WIDTH = 100
const COLUMN = 30

/** `--name VALUE` as help and completion show it. */
export function optionLabel (name: string, spec: OptionSpec): string {
  const long = `--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`
  return spec.short === undefined ? long : `-${spec.short}, ${long}`
}

/** Rows of (left, right) as two aligned columns, the right one wrapped; a row of one string is a heading. */
export function columns (rows: Array<[string, string] | [string]>, indent = 2): string {
  const width = Math.min(COLUMN, Math.max(...rows.map(r => r.length === 2 ? r[0].length : 0), 0) + 2)
  const lines: string[] = []
  for (const row of rows) {
    if (row.length === 1) { lines.push(row[0]); continue }
    const [left, right] = row
    const wrapped = wrap(right, WIDTH - indent - width)
    if (left.length + 2 > width) {
      lines.push(' '.repeat(indent) + left)
      for (const line of wrapped) lines.push(' '.repeat(indent + width) + line)
    } else {
      wrapped.forEach((line, i) => lines.push(' '.repeat(indent) + (i === 0 ? left.padEnd(width) : ' '.repeat(width)) + line))
    }
  }
  return lines.map(l => l.trimEnd()).join('\n')
}

/** An option table, aligned as one, with a heading wherever the `group` of its options changes. */
export function formatOptions (table: OptionTable): string {
  const rows: Array<[string, string] | [string]> = []
  let group: string | undefined
  for (const [name, spec] of Object.entries(table)) {
    if (spec.group !== group && spec.group !== undefined) rows.push([`${rows.length > 0 ? '\n' : ''}${spec.group}:`])
    group = spec.group
    const repeat = spec.multiple === true ? ' (repeatable)' : ''
    rows.push([optionLabel(name, spec), `${spec.help}${repeat}${spec.default === undefined ? '' : ` [default: ${spec.default}]`}`])
  }
  return columns(rows)
}

/** Whether the table's options are grouped under headings of their own. */
function grouped (table: OptionTable): boolean {
  return Object.values(table).some(o => o.group !== undefined)
}

function wrap (text: string, width: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== '' && line.length + 1 + word.length > width) { lines.push(line); line = word } else line = line === '' ? word : `${line} ${word}`
  }
  lines.push(line)
  return lines
}

/** `narswarm help`: the commands, the options of `serve`, and every mapper and backend scheme. */
export async function mainHelp (commands: readonly Command[], version: string): Promise<string> {
  const serve = commands.find(c => c.name === 'serve')
  const { mappers, backends } = await pluginSummaries()
  return `narswarm ${version} — a peer-to-peer binary cache for Nix and Lix

Usage: narswarm COMMAND [options]    ('narswarm COMMAND --help' for a command's options)

Commands:
${columns(commands.map(c => [`${c.name} ${c.usage}`.trim(), c.summary]))}

Options of 'serve' (each also a NARSWARM_<NAME> variable, e.g. NARSWARM_STATE_DIR, or a TOML key):
${formatOptions(serve?.options ?? {})}

Mapper schemes (--mapper SPEC):
${columns(mappers.map(p => [`${p.scheme}:`, p.summary]))}

Backend schemes (--backend SPEC):
${columns(backends.map(p => [`${p.scheme}:`, p.summary]))}
`
}

/** `narswarm COMMAND --help`, or of one of its subcommands. */
export function commandHelp (command: Command, sub?: string): string {
  const subcommand = sub === undefined ? undefined : command.subcommands?.[sub]
  if (subcommand !== undefined) {
    return `Usage: narswarm ${command.name} ${sub} ${subcommand.usage}\n\n${wrap(subcommand.summary, WIDTH).join('\n')}\n` +
      (subcommand.options === undefined || Object.keys(subcommand.options).length === 0 ? '' : `\nOptions:\n${formatOptions(subcommand.options)}\n`)
  }
  const parts = [`Usage: narswarm ${command.name} ${command.usage}`.trimEnd(), '', wrap(command.description ?? command.summary, WIDTH).join('\n')]
  if (command.subcommands !== undefined) {
    for (const [name, s] of Object.entries(command.subcommands)) {
      parts.push('', `narswarm ${command.name} ${name} ${s.usage}`.trimEnd(), wrap(s.summary, WIDTH - 4).map(l => `    ${l}`).join('\n'))
      if (s.options !== undefined && Object.keys(s.options).length > 0) parts.push(formatOptions(s.options).replace(/^/gm, '  '))
    }
  }
  if (command.options !== undefined && Object.keys(command.options).length > 0) {
    parts.push('', ...(grouped(command.options) ? [] : ['Options:']), formatOptions(command.options))
  }
  return `${parts.join('\n')}\n`
}
