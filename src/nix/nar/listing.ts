/**
 * The `<hashPart>.ls` NAR listing that binary caches write with `write-nar-listing=true` (Nix
 * `src/libstore/nar-accessor.cc` `listNar`): `{"version":1,"root":<node>}`, where a regular file
 * records its size, executable bit and `narOffset` (where its contents start in the uncompressed
 * NAR), a symlink its target and a directory its entries. Keys are written in the order Nix 2.8
 * writes them and entries in NAR order; a JS object would reorder integer-like names, so entries
 * are kept in a Map and serialised by hand.
 */
import { parseNar } from './reader.ts'
import type { NarReadOptions } from './reader.ts'
import { Utf8 } from './wire.ts'

export type NarListingNode =
  | { type: 'regular', size: number, executable?: true, narOffset: number }
  | { type: 'symlink', target: string }
  | { type: 'directory', entries: Map<string, NarListingNode> }

/** Reads a whole NAR stream (contents skipped, not buffered) and returns its root node. */
export async function narListing (source: AsyncIterable<Uint8Array>, opts: NarReadOptions = {}): Promise<NarListingNode> {
  const dirs: Array<Map<string, NarListingNode>> = []
  let root: NarListingNode | undefined
  for await (const ev of parseNar(source, opts)) {
    let node: NarListingNode
    if (ev.type === 'file') {
      node = ev.executable
        ? { type: 'regular', size: ev.size, executable: true, narOffset: ev.offset }
        : { type: 'regular', size: ev.size, narOffset: ev.offset }
    } else if (ev.type === 'symlink') {
      node = { type: 'symlink', target: ev.target }
    } else {
      node = { type: 'directory', entries: new Map() }
    }
    dirs.length = ev.depth
    if (ev.depth === 0) root = node
    else dirs[ev.depth - 1]!.set(Utf8.decode(ev.name), node)
    if (node.type === 'directory') dirs.push(node.entries)
  }
  if (root === undefined) throw new Error('unreachable: a parsed NAR has a root')
  return root
}

function nodeJson (node: NarListingNode): string {
  switch (node.type) {
    case 'regular':
      return `{"type":"regular","size":${node.size}${node.executable === true ? ',"executable":true' : ''},"narOffset":${node.narOffset}}`
    case 'symlink':
      return `{"type":"symlink","target":${JSON.stringify(node.target)}}`
    case 'directory': {
      const parts: string[] = []
      for (const [name, child] of node.entries) parts.push(`${JSON.stringify(name)}:${nodeJson(child)}`)
      return `{"type":"directory","entries":{${parts.join(',')}}}`
    }
  }
}

/** The `.ls` file body for a listing root. */
export function listingJson (root: NarListingNode): string {
  return `{"version":1,"root":${nodeJson(root)}}`
}
