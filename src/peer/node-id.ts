/**
 * The node id: a random name for this node on the LAN, kept in the state directory so that a
 * restarted node is recognised as the same peer (and its old table entry replaced, not doubled).
 * It is random rather than derived from a host name or key so that it says nothing about the
 * machine. Two nodes started from one copied state directory would share an id: remove the
 * `node-id` file of the copy.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { NODE_ID } from './announcement.ts'

export function loadNodeId (stateDir: string): string {
  const file = join(stateDir, 'node-id')
  try {
    const id = readFileSync(file, 'utf8').trim()
    if (NODE_ID.test(id)) return id
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const id = randomBytes(10).toString('hex')
  mkdirSync(stateDir, { recursive: true })
  const temp = `${file}.${randomBytes(4).toString('hex')}.tmp`
  writeFileSync(temp, `${id}\n`, { mode: 0o644 })
  renameSync(temp, file)
  return id
}
