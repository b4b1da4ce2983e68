/**
 * `log-format`: JSON lines by default when stderr is not a terminal, one readable line per event
 * with `pretty`, and a clear refusal of an unknown format.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { tempDir } from '../helpers/temp.ts'

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

async function serveUntilListening (args: string[]): Promise<{ stderr: string, code: number | null }> {
  const dir = tempDir()
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', MAIN, 'serve', '--listen', '127.0.0.1:0', '--state-dir', dir, '--peer-listen', 'off', '--discovery', 'off', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  await new Promise<void>(resolve => {
    child.stderr.on('data', (text: string) => { stderr += text; if (stderr.includes('narswarm substituter listening')) resolve() })
    child.once('exit', () => resolve())
  })
  child.kill('SIGTERM')
  return { stderr, code: await exited }
}

test('pretty: readable lines, not JSON', async () => {
  const { stderr, code } = await serveUntilListening(['--log-format', 'pretty'])
  assert.equal(code, 0)
  const line = stderr.split('\n').find(l => l.includes('narswarm substituter listening'))
  assert.ok(line !== undefined, stderr)
  assert.match(line, /INFO/)
  assert.throws(() => JSON.parse(line), 'not a JSON line')
})

test('auto on a pipe: JSON lines', async () => {
  const { stderr } = await serveUntilListening([])
  const line = stderr.split('\n').find(l => l.includes('narswarm substituter listening'))!
  assert.equal((JSON.parse(line) as { msg: string }).msg, 'narswarm substituter listening')
})

test('an unknown format is refused with the known ones', async () => {
  const { stderr, code } = await serveUntilListening(['--log-format', 'xml'])
  assert.equal(code, 1)
  assert.match(stderr, /log-format must be one of auto, json, pretty, got 'xml'/)
})
