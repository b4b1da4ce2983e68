/**
 * Keeps a long batch run's heap at its live size. A process that allocates steadily and is never
 * idle (publishing 100,000 narinfos: ~25 KiB of short-lived objects per path) promotes garbage into
 * V8's old generation faster than V8 decides to collect it: without help the heap grew with the
 * number of paths (770 MiB RSS at 100,000) although what it held alive stayed under 60 MiB.
 * `relieveHeap` runs a full collection when the heap has grown past a threshold since the last one.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

let gc: (() => void) | undefined
let after = 0

/**
 * Call before a batch run starts: a young generation kept small (V8 grows it to over 100 MiB
 * under a steady load), and the collector's own entry point reached without `--expose-gc`.
 */
export function batchHeap (): void {
  setFlagsFromString('--max-semi-space-size=4')
  setFlagsFromString('--expose-gc')
  gc = runInNewContext('gc') as () => void
}

/** A full collection when the used heap is `growth` bytes over what the last one left. */
export function relieveHeap (growth = 32 << 20): void {
  const used = getHeapStatistics().used_heap_size
  if (used < after + growth) return
  if (gc === undefined) return
  gc()
  after = getHeapStatistics().used_heap_size
}
