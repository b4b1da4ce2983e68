/**
 * Which addresses are worth announcing and dialling on a LAN. A host's DNS-SD records list every
 * address it has, and many are useless to a peer: loopback and unspecified addresses point back
 * at the dialler itself (avahi publishes 127.0.0.1 and ::1, as ncro found), and link-local ones
 * (169.254/16, fe80::/10) cannot be dialled without knowing which interface they belong to. A
 * node announces only the addresses its peer listener really serves, and a browser dials IPv4
 * first (an IPv4-only listener is the common case), starting with the address the announcement
 * came from, which is known to be reachable on the link it arrived on.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net'
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os'
import { isPeerHost } from './table.ts'

/** Whether a peer could dial `address`: an IP address that is not loopback, link-local or unspecified. */
function isPeerAddress (address: string): boolean {
  return isIP(address) !== 0 && isPeerHost(address)
}

/**
 * The addresses a listener bound to `host` serves, as others on the LAN would dial them:
 * `0.0.0.0` serves every IPv4 address, `::` (or an empty host) every address, a specific address
 * only itself. Addresses no peer could dial are left out.
 */
export function servedAddresses (host: string, interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces()): string[] {
  const all = Object.values(interfaces).flatMap(list => list ?? []).filter(i => !i.internal)
  const wanted = host === '0.0.0.0'
    ? all.filter(i => i.family === 'IPv4')
    : host === '::' || host === ''
      ? all
      : all.filter(i => i.address === host)
  return [...new Set(wanted.map(i => i.address).filter(isPeerAddress))]
}

/**
 * The dialable addresses among those a peer announced, best first: IPv4 before IPv6, and within a
 * family the address the announcement came from (`source`) first.
 */
export function dialOrder (announced: readonly string[], source?: string): string[] {
  const usable = [...new Set(announced.filter(isPeerAddress))]
  const rank = (a: string): number => (isIPv4(a) ? 0 : 2) + (a === source ? 0 : 1)
  return usable.sort((x, y) => rank(x) - rank(y))
}

/** The base URL of a peer listener at `address`. */
export function peerUrl (address: string, port: number): string {
  return isIPv6(address) ? `http://[${address}]:${port}` : `http://${address}:${port}`
}
