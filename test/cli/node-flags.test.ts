import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { SERVE_ENV, SERVE_NODE_FLAGS } from '../../src/cli/node-flags.ts'
import { startNarswarm } from '../helpers/narswarm.ts'

const cmdline = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)

test('serve runs with its Node flags, in the process that was started; flags given already are kept', async () => {
  const n = await startNarswarm([])
  try {
    const args = cmdline(n.child.pid!)
    for (const flag of SERVE_NODE_FLAGS) assert.ok(args.includes(flag), args.join(' '))
    assert.ok(args.includes('serve') && args.includes('--disable-warning=ExperimentalWarning'), 'its own arguments and Node flags kept')
    const environ = readFileSync(`/proc/${n.child.pid!}/environ`, 'utf8').split('\0')
    for (const [name, value] of Object.entries(SERVE_ENV)) assert.ok(environ.includes(`${name}=${process.env[name] ?? value}`), name)
    assert.equal((await fetch(`${n.url}/nix-cache-info`)).status, 200)
  } finally {
    await n.stop()
  }
  const given = await startNarswarm([], { env: { NODE_OPTIONS: '--max-semi-space-size=4' } })
  try {
    const args = cmdline(given.child.pid!)
    assert.ok(!args.some(a => a.startsWith('--max-semi-space-size')), `not executed again: ${args.join(' ')}`)
  } finally {
    await given.stop()
  }
})
