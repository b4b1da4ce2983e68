/**
 * One host at the far end of a LAN link of a chosen rate, so that a bench can compare transfers as
 * they go between two machines rather than over loopback, where nothing limits nginx but memory
 * copies: a network namespace on a bridge (test/helpers/netns.ts), the bridge given an address so
 * that this process (in the root namespace) reaches the host, and a token-bucket filter (`tc
 * tbf`) on the host's interface, so that everything the host sends crosses a link of `mbit`.
 * Requests to the host are not limited; they are small.
 */
import { execFileSync } from 'node:child_process'
import { createLan, netnsUnavailable } from '../../test/helpers/netns.ts'

export interface LinkedHost {
  /** The host's IPv4 address, reachable from this process. */
  address: string
  /** The command prefix that runs a program on the host. */
  wrap: string[]
  close: () => void
}

/** Why such a host cannot be made here; undefined when it can. */
export function linkUnavailable (): string | undefined {
  const why = netnsUnavailable()
  if (why !== undefined) return why
  try {
    execFileSync('tc', ['-V'], { stdio: 'ignore' })
  } catch {
    return "the 'tc' command (iproute2) is not installed"
  }
  return undefined
}

export function createLinkedHost (mbit: number): LinkedHost {
  const lan = createLan(1)
  const host = lan.hosts[0]!
  try {
    const subnet = host.address.replace(/\.\d+$/, '')
    execFileSync('ip', ['addr', 'add', `${subnet}.254/24`, 'dev', lan.bridge])
    // A burst of 128 KiB holds a 1 Gbit/s link at line rate (measured: 113.7 MiB/s of payload).
    execFileSync('ip', ['netns', 'exec', host.name, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf',
      'rate', `${mbit}mbit`, 'burst', '128kb', 'latency', '5ms'])
  } catch (err) {
    lan.close()
    throw err
  }
  return { address: host.address, wrap: lan.wrap(host), close: lan.close }
}
