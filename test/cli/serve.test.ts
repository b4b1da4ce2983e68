/**
 * `startSubstituter` when the start fails part-way: what it had opened is closed again. A SQLite
 * file in WAL mode keeps its `-wal` and `-shm` files until it is closed, so they show whether the
 * state database and a `sqlite:` mapper were.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readdir } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { loadConfig } from '../../src/cli/config.ts'
import { startSubstituter } from '../../src/cli/serve.ts'
import { silentLogger } from '../../src/log.ts'
import { tempDir } from '../helpers/temp.ts'

test('a listen address in use: the start fails and closes the state database and the plug-ins', async () => {
  const busy = createServer().listen(0, '127.0.0.1')
  await once(busy, 'listening')
  try {
    const dir = tempDir()
    const config = loadConfig({
      flags: { 'state-dir': dir, listen: `127.0.0.1:${(busy.address() as AddressInfo).port}`, 'peer-listen': 'off', discovery: 'off', mapper: [`sqlite://${join(dir, 'index.db')}`] },
      env: {}
    })
    await assert.rejects(startSubstituter(config, silentLogger()), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE')
    const files = await readdir(dir)
    assert.ok(files.includes('index.db') && files.includes('narswarm.sqlite'), files.join(' '))
    assert.deepEqual(files.filter(f => /-(wal|shm)$/.test(f)), [], 'every SQLite file closed')
  } finally {
    busy.close()
  }
})
