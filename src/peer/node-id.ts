/**
 * This node's id: 16 random bytes in hex, made once per state directory and kept in `node-id`. It
 * is announced in discovery (TXT `id`) and answered by the peer listener's `info`, so a node that
 * sees itself, or one peer at several addresses, can tell.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export function loadNodeId (stateDir: string): string {
  const file = join(stateDir, 'node-id')
  try {
    const id = readFileSync(file, 'utf8').trim()
    if (/^[0-9a-f]{32}$/.test(id)) return id
  } catch { /* made below */ }
  const id = randomBytes(16).toString('hex')
  writeFileSync(file, `${id}\n`, { mode: 0o644 })
  return id
}
