/**
 * One embedded node per IPFS repository. A second process that wrote blocks into a repository a
 * running node holds would report success while that node never serves them (its stores do not
 * see the other's writes, and it announces only what it imported itself); so the node takes
 * `narswarm.lock` (holding its pid) in the repository, and `serve` and `publish` alike refuse a
 * repository whose lock names a live process. A lock left by a process that is gone is taken over.
 */
import { readFile, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError } from '../../errors.ts'
import { isAlive } from '../../util/process.ts'

const LOCK = 'narswarm.lock'
/** Repositories this process holds, so that two nodes of one process cannot share one either. */
const held = new Set<string>()


/** Takes the repository's lock; resolves to the function that releases it. */
export async function lockRepo (dir: string): Promise<() => Promise<void>> {
  const file = join(dir, LOCK)
  for (let attempt = 0; ; attempt++) {
    if (held.has(dir)) throw refusal(dir, process.pid)
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' })
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err
    }
    const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10)
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) throw refusal(dir, pid)
    // Stale: its process is gone (or it is unreadable, e.g. cut short by a crash).
    await unlink(file).catch(() => {})
  }
  held.add(dir)
  return async () => {
    held.delete(dir)
    await unlink(file).catch(() => {})
  }
}

function refusal (dir: string, pid: number): ConfigError {
  return new ConfigError(`ipfs backend: the repository ${dir} is in use by a running narswarm (pid ${pid}); ` +
    'a second process writing into it would not reach that node. Stop it first, or publish into another repository (ipfs:?path=…) or through a kubo node (ipfs+http://…)')
}
