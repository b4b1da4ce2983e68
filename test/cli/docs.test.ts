/**
 * The README's tables and the example configuration say what the code defines: every command of
 * the command table, every setting with its default, every key in narswarm.example.toml, the
 * content codings narswarm reads.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { COMMANDS } from '../../src/cli/commands.ts'
import { LIST_SETTINGS, SETTINGS, shownDefault } from '../../src/cli/config.ts'
import { CONTENT_CODINGS } from '../../src/util/content-encoding.ts'
import { SIDE_FILES } from '../../src/server/side-files.ts'

const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
const example = await readFile(new URL('../../narswarm.example.toml', import.meta.url), 'utf8')
const protocol = await readFile(new URL('../../docs/protocol.md', import.meta.url), 'utf8')

/** The rows of the first table under a `## heading` (of `text`, the README by default), as arrays of cells. */
function table (heading: string, text = readme): string[][] {
  const lines = text.slice(text.indexOf(`\n${heading.startsWith('#') ? heading : `## ${heading}`}\n`) + 1).split('\n')
  const start = lines.findIndex(l => l.startsWith('| '))
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('|'))
  return lines.slice(start, end).filter(l => !l.startsWith('|---'))
    .map(l => l.slice(2, -2).split(/ (?<!\\)\| /).map(c => c.trim()))
}

test('every command of the command table is in the README Commands table', () => {
  const rows = table('Commands')
  for (const c of COMMANDS) assert.ok(rows.some(r => r[0]!.startsWith(`\`narswarm ${c.name}`)), `narswarm ${c.name} in README Commands`)
})

test('every setting is a row of the README options table with its default, and a key of narswarm.example.toml', () => {
  const rows = new Map(table('Options').map(r => [r[0]!, r]))
  for (const key of Object.keys(SETTINGS)) {
    const row = rows.get(`\`${key}\``)
    assert.ok(row !== undefined, `${key}: a row of the README options table`)
    assert.ok(row[1]!.startsWith(`\`${shownDefault(key)}\``), `${key}: its default (${shownDefault(key)}) in the README, not ${row[1]}`)
  }
  for (const key of LIST_SETTINGS) assert.ok(rows.has(`\`${key}\``), `${key}: a row of the README options table`)
  for (const key of [...Object.keys(SETTINGS), ...LIST_SETTINGS]) {
    assert.match(example, new RegExp(`^(# )?(${key} =|\\[\\[${key}\\]\\])`, 'm'), `${key} in narswarm.example.toml`)
  }
})

test('the README names the content codings narswarm reads, and no other', () => {
  const start = readme.indexOf('- **Content-Encoding is taken off first.**')
  assert.ok(start >= 0, 'the Content-Encoding paragraph of the README')
  const paragraph = readme.slice(start, readme.indexOf('\n- ', start + 1))
  // The list runs from the colon before 'stacked in any order' to it.
  const end = paragraph.indexOf('stacked')
  const listed = paragraph.slice(paragraph.lastIndexOf(':', end), end).match(/`[^`]+`/g)?.map(c => c.slice(1, -1)).sort()
  assert.deepEqual(listed, Object.keys(CONTENT_CODINGS).filter(c => !c.startsWith('x-')).sort())
})

test('docs/protocol.md lists the side files narswarm relays, as the code defines them', () => {
  const rows = table('### Build logs, listings and realisations', protocol).slice(1)
  const size = (n: number): string => n >= 1 << 30 ? `${n / (1 << 30)} GiB` : `${n / (1 << 20)} MiB`
  assert.deepEqual(rows, SIDE_FILES.map(k => [k.kind, `\`${k.shown}\``, k.readBy, size(k.limit)]))
})
