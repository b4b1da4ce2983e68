/**
 * A LAN made of Linux network namespaces, for tests that need real multicast between processes
 * (mDNS discovery) without touching the machine's own network: one bridge in the root namespace
 * (with no address, so the host neither routes to it nor hears its multicast), one namespace per
 * host joined to it by a veth pair, addresses on a random private /24 that exists only inside these
 * namespaces, a multicast route (224.0.0.0/4) on each veth and loopback up. Processes run inside
 * with `ip netns exec`, which execs in place, so a signal to the child reaches the program itself.
 *
 * Names carry the creating process's pid (several test runs share the machine): everything is
 * removed on close, at process exit if a test forgot, and by a later run when the pid is dead and
 * the namespace is old (a crashed run).
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { randomInt } from 'node:crypto'
import { isAlive } from '../../src/util/process.ts'

const PREFIX = 'nsw'
const STALE_MS = 10 * 60_000

export interface Host {
  /** The namespace's name. */
  name: string
  /** Its IPv4 address on the LAN. */
  address: string
}

export interface Lan {
  hosts: Host[]
  /** The bridge's name in the root namespace. */
  bridge: string
  /** The command prefix that runs a program inside `host`. */
  wrap: (host: Host) => string[]
  /** Starts `command` inside `host`. */
  spawn: (host: Host, command: string, args: string[], options?: SpawnOptions) => ChildProcess
  close: () => void
}

let reason: string | undefined | null = null

/** Why namespaces cannot be made here (not root, no `ip`, no permission); undefined when they can. */
export function netnsUnavailable (): string | undefined {
  if (reason !== null) return reason
  reason = probe()
  return reason
}

function probe (): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' })
  } catch {
    return "the 'ip' command (iproute2) is not installed"
  }
  const name = `${PREFIX}-${process.pid.toString(16)}-probe`
  const bridge = `${PREFIX}b${process.pid.toString(16)}xp`
  try {
    ip(['netns', 'add', name])
    ip(['link', 'add', bridge, 'type', 'bridge', 'mcast_snooping', '0'])
    ip(['link', 'add', `${PREFIX}v${process.pid.toString(16)}xp`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name])
  } catch (err) {
    return `cannot create network namespaces joined by a bridge: ${(err as Error).message}`
  } finally {
    quietly(['netns', 'del', name])
    quietly(['link', 'del', bridge])
  }
  return undefined
}

function ip (args: string[]): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim()
    throw new Error(`ip ${args.join(' ')}: ${stderr === '' ? (err as Error).message : stderr}`)
  }
}

function quietly (args: string[]): void {
  try { ip(args) } catch { /* already gone */ }
}


/** Removes namespaces and bridges of runs whose process is gone. */
export function removeLeftovers (): void {
  const pattern = new RegExp(`^${PREFIX}-([0-9a-f]+)-`)
  const dir = '/run/netns'
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const pid = pattern.exec(name)?.[1]
    if (pid === undefined || isAlive(parseInt(pid, 16))) continue
    let age = Infinity
    try { age = Date.now() - statSync(`${dir}/${name}`).mtimeMs } catch { /* gone */ }
    if (age > STALE_MS) quietly(['netns', 'del', name])
  }
  // A bridge outlives its namespaces (their veths die with them); one with no ports left is free.
  let links: Array<{ ifname: string, master?: string }> = []
  try { links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) } catch { return }
  for (const link of links) {
    const pid = new RegExp(`^${PREFIX}b([0-9a-f]+)x`).exec(link.ifname)?.[1]
    if (pid === undefined || isAlive(parseInt(pid, 16))) continue
    if (!links.some(l => l.master === link.ifname)) quietly(['link', 'del', link.ifname])
  }
}

let lans = 0
const open = new Set<() => void>()
process.on('exit', () => { for (const close of open) close() })

/** A LAN of `count` hosts. Call netnsUnavailable() first and skip when it gives a reason. */
export function createLan (count: number): Lan {
  removeLeftovers()
  const run = `${process.pid.toString(16)}x${(lans++).toString(16)}`
  const bridge = `${PREFIX}b${run}`
  if (bridge.length + 2 > 15) throw new Error(`interface name ${bridge} too long`)
  const subnet = `10.${randomInt(64, 250)}.${randomInt(1, 250)}`
  const hosts: Host[] = []
  let closed = false
  const close = (): void => {
    if (closed) return
    closed = true
    open.delete(close)
    for (const host of hosts) quietly(['netns', 'del', host.name])
    quietly(['link', 'del', bridge])
  }
  open.add(close)
  try {
    ip(['link', 'add', bridge, 'type', 'bridge', 'mcast_snooping', '0'])
    ip(['link', 'set', bridge, 'up'])
    for (let i = 0; i < count; i++) {
      const host = { name: `${PREFIX}-${run}-${i}`, address: `${subnet}.${i + 1}` }
      const veth = `${PREFIX}v${run}${i.toString(16)}`
      ip(['netns', 'add', host.name])
      hosts.push(host)
      ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.name])
      ip(['link', 'set', veth, 'master', bridge, 'up'])
      ip(['-n', host.name, 'link', 'set', 'lo', 'up'])
      ip(['-n', host.name, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0'])
      ip(['-n', host.name, 'link', 'set', 'eth0', 'up'])
      ip(['-n', host.name, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0'])
    }
  } catch (err) {
    close()
    throw err
  }
  const wrap = (host: Host): string[] => ['ip', 'netns', 'exec', host.name]
  return {
    hosts,
    bridge,
    wrap,
    spawn: (host: Host, command: string, args: string[], options: SpawnOptions = {}): ChildProcess =>
      spawn('ip', ['netns', 'exec', host.name, command, ...args], options),
    close
  }
}
