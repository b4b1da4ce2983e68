/**
 * Keeps a long batch run's heap near its live size. A process that allocates steadily and is never
 * idle (publishing 100,000 narinfos: ~25 KiB of short-lived objects per path) makes V8 grow its
 * young generation to over 100 MiB and promote garbage into the old generation faster than it
 * decides to collect it: the heap grew with the number of paths (770 MiB RSS at 100,000) although
 * what it held alive stayed under 60 MiB. `batchHeap` stops the young generation from growing
 * (a V8 setting read at each growth, so it applies to a running process); `relieveHeap` runs a
 * full collection when the heap has grown past a threshold since the last one.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

let gc: (() => void) | undefined
let after = 0

/** Call before a batch run starts: the young generation stays at its initial size, and the collector's own entry point is reached without `--expose-gc`. */
export function batchHeap (): void {
  setFlagsFromString('--semi-space-growth-factor=1')
  setFlagsFromString('--expose-gc')
  gc = runInNewContext('gc') as () => void
}

/** A full collection when the used heap is `growth` bytes over what the last one left. */
export function relieveHeap (growth = 32 << 20): void {
  if (gc === undefined || getHeapStatistics().used_heap_size < after + growth) return
  gc()
  after = getHeapStatistics().used_heap_size
}

/**
 * A copy of `text` that holds nothing else alive. A substring (a hash part, a store path) in V8 may
 * be a view of the string it was cut from — a whole narinfo — so a set of them kept for a run holds
 * every narinfo of the run.
 */
export function detached (text: string): string {
  return Buffer.from(text, 'latin1').toString('latin1')
}
