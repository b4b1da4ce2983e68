/**
 * A list of store paths never goes on one command line: `queryPathInfos` asks `nix path-info` in
 * batches. Checked with 100,000 paths (about 6 MiB of arguments, over the kernel's limit) against
 * a stand-in `nix` on PATH that records how many paths each run got.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PATHS_PER_RUN, queryPathInfos } from '../../src/publish/path-info.ts'
import { tempDir } from '../helpers/temp.ts'

test('100,000 paths: nix path-info runs with at most PATHS_PER_RUN paths each, every path answered', async () => {
  const dir = tempDir('narswarm-path-info-')
  const log = join(dir, 'runs')
  // Answers like Nix 2.8 for paths it does not have: [{"path": …, "valid": false}, …].
  await writeFile(join(dir, 'nix'), `#!/bin/sh
shift 4
echo $# >> '${log}'
printf '%s\\n' "$@" | awk 'BEGIN { printf "[" } { printf "%s{\\"path\\":\\"%s\\",\\"valid\\":false}", (NR > 1 ? "," : ""), $0 } END { printf "]" }'
`)
  await chmod(join(dir, 'nix'), 0o755)
  const paths = Array.from({ length: 100_000 }, (_, i) => `/nix/store/${String(i).padStart(32, '0')}-path-${i}`)
  const path = process.env.PATH
  process.env.PATH = `${dir}:${path ?? ''}`
  try {
    const { infos, invalid } = await queryPathInfos(paths)
    assert.equal(infos.length, 0)
    assert.equal(invalid.length, paths.length)
    assert.deepEqual(new Set(invalid.map(i => i.path)).size, paths.length)
  } finally {
    process.env.PATH = path
  }
  const runs = (await readFile(log, 'utf8')).trim().split('\n').map(Number)
  assert.equal(runs.length, Math.ceil(paths.length / PATHS_PER_RUN))
  assert.ok(runs.every(n => n <= PATHS_PER_RUN), `paths per run: ${runs.join(', ')}`)
})
