/**
 * Buffers lent for bytes read from a file on their way out, and given back once they are gone. A
 * fresh buffer for every read costs more than the read itself: its memory is new to the process
 * and faulted in page by page, and it is freed only when V8 collects the object that owns it.
 * Reading a 200 MiB file from the page cache in 256 KiB pieces took 61–466 ms into fresh buffers
 * and 39–58 ms into one reused buffer on the machine of bench/README.md. A pool lends a buffer
 * (`take`), and whoever knows that the bytes are no longer needed — `sendBody` once the socket has
 * taken them, an ingest once it asks for the next piece — hands the piece back (`giveBack`). A
 * piece that is never handed back (its consumer does not know about pools, or keeps it) is simply
 * collected like any other buffer: a pool keeps no hold on what it lent.
 */

/** The pool a lent piece goes back to, and the whole buffer it is a view of. */
const lent = new WeakMap<Uint8Array, { pool: BytePool, buffer: Uint8Array }>()

export class BytePool {
  readonly #free: Uint8Array[] = []
  readonly size: number
  readonly #keep: number

  /** Buffers of `size` bytes; at most `keep` wait to be lent again. */
  constructor (size: number, keep: number) {
    this.size = size
    this.#keep = keep
  }

  /** A buffer of `size` bytes; call `lend` on the view of it that goes out. */
  take (): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.size)
  }

  /** Marks `piece`, a view of `buffer` (from `take`), as going out: `giveBack(piece)` returns `buffer`. */
  lend (piece: Uint8Array, buffer: Uint8Array): Uint8Array {
    lent.set(piece, { pool: this, buffer })
    return piece
  }

  /** A buffer taken and not lent (a read that failed). */
  put (buffer: Uint8Array): void {
    if (buffer.length === this.size && this.#free.length < this.#keep) this.#free.push(buffer)
  }

  /** Buffers waiting to be lent (for tests). */
  get free (): number { return this.#free.length }
}

/**
 * Hands back a piece that may have come from a pool: its bytes may be overwritten from now on. A
 * piece that was not lent, or was handed back already, is left alone.
 */
export function giveBack (piece: Uint8Array): void {
  const owner = lent.get(piece)
  if (owner === undefined) return
  lent.delete(piece)
  owner.pool.put(owner.buffer)
}
