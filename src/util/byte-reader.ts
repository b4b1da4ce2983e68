/**
 * Exact byte counts read from a stream that arrives in pieces of any size (a body from a stranger,
 * framed by lengths). It pulls from its source only as the caller takes bytes, so a fast sender
 * cannot fill memory, keeps only what is not yet taken, and copies only when a read spans pieces.
 * What a short stream means is the caller's to say: reads give undefined when the source ends first.
 */
export class ByteReader {
  readonly #source: AsyncIterator<Uint8Array>
  #chunks: Uint8Array[] = []
  #buffered = 0

  constructor (source: AsyncIterable<Uint8Array>) {
    this.#source = source[Symbol.asyncIterator]()
  }

  /** Bytes pulled from the source and not yet taken. */
  get buffered (): number {
    return this.#buffered
  }

  /** Ensures `n` bytes are buffered; false when the source ends first. */
  async fill (n: number): Promise<boolean> {
    while (this.#buffered < n) {
      const next = await this.#source.next()
      if (next.done === true) return false
      if (next.value.length === 0) continue
      this.#chunks.push(next.value)
      this.#buffered += next.value.length
    }
    return true
  }

  /** The next `n` buffered bytes, left in place (`fill(n)` first; meant for a few bytes). */
  peek (n: number): Uint8Array {
    if (this.#chunks[0]!.length >= n) return this.#chunks[0]!.subarray(0, n)
    return Buffer.concat(this.#chunks.slice(0, n)).subarray(0, n) // at most n chunks hold n bytes
  }

  /** The next `n` bytes, or undefined when the source ends first. */
  async read (n: number): Promise<Uint8Array | undefined> {
    return await this.fill(n) ? this.take(n) : undefined
  }

  /** The next `n` bytes as the pieces of the chunks they are in, not copied; undefined when the source ends first. */
  async pieces (n: number): Promise<Uint8Array[] | undefined> {
    if (!await this.fill(n)) return undefined
    const out: Uint8Array[] = []
    let left = n
    let used = 0
    while (left > 0) {
      const chunk = this.#chunks[used]!
      if (chunk.length <= left) {
        out.push(chunk)
        left -= chunk.length
        used++
      } else {
        out.push(chunk.subarray(0, left))
        this.#chunks[used] = chunk.subarray(left)
        left = 0
      }
    }
    this.#chunks.splice(0, used)
    this.#buffered -= n
    return out
  }

  /** The next `n` buffered bytes (`fill(n)` first). */
  take (n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0)
    const first = this.#chunks[0]!
    this.#buffered -= n
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift()
      else this.#chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    // Spread over several chunks: copied out, and the used chunks dropped in one splice (tiny
    // chunks from a peer must not cost a shift per chunk).
    const out = Buffer.allocUnsafe(n) // every byte is set below
    let at = 0
    let used = 0
    while (at < n) {
      const chunk = this.#chunks[used]!
      const part = Math.min(chunk.length, n - at)
      out.set(chunk.subarray(0, part), at)
      at += part
      if (part === chunk.length) used++
      else this.#chunks[used] = chunk.subarray(part)
    }
    this.#chunks.splice(0, used)
    return out
  }

  async close (): Promise<void> {
    await this.#source.return?.()
  }
}
