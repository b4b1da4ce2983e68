/**
 * Temporary directories for tests: made fresh, and removed when the test process exits (also
 * after a failure), so no test file keeps its own list.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const made: string[] = []
process.on('exit', () => { for (const dir of made) rmSync(dir, { recursive: true, force: true }) })

export function tempDir (prefix = 'narswarm-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  made.push(dir)
  return dir
}
