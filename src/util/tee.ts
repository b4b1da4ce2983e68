/**
 * One byte stream read once and handed to several consumers (a NAR published to several backends
 * at once). Each consumer has a one-chunk mailbox; the source is read again only when every
 * consumer still reading has taken the previous chunk, so memory stays at a chunk or two whatever
 * the stream's size and the slowest consumer sets the pace. A consumer that stops early, or that
 * its owner `close`s (e.g. its backend failed before reading), no longer holds the others up; when
 * all have stopped the source is closed. An error of the source reaches every consumer. Consumers
 * must read concurrently: in lock step, one cannot run ahead of another that waits for it.
 */
export interface TeeConsumer extends AsyncIterable<Uint8Array> {
  /** Stops this consumer; the others go on without it. Idempotent. */
  close: () => void
}

class Mailbox {
  chunk: Uint8Array | undefined
  ended = false
  error: { reason: unknown } | undefined
  closed = false
  #taken: (() => void) | undefined
  #arrived: (() => void) | undefined

  /** Resolves when the consumer has taken the chunk or stopped. */
  async put (chunk: Uint8Array): Promise<void> {
    if (this.closed) return
    this.chunk = chunk
    const taken = new Promise<void>(resolve => { this.#taken = resolve })
    this.#wake()
    await taken
  }

  finish (error?: unknown): void {
    if (error === undefined) this.ended = true
    else this.error = { reason: error }
    this.#wake()
  }

  close (): void {
    this.closed = true
    this.chunk = undefined
    this.#taken?.()
    this.#wake()
  }

  async take (start: () => void): Promise<IteratorResult<Uint8Array>> {
    start()
    for (;;) {
      if (this.closed) return { done: true, value: undefined }
      if (this.chunk !== undefined) {
        const chunk = this.chunk
        this.chunk = undefined
        this.#taken?.()
        return { done: false, value: chunk }
      }
      if (this.error !== undefined) throw this.error.reason
      if (this.ended) return { done: true, value: undefined }
      await new Promise<void>(resolve => { this.#arrived = resolve })
    }
  }

  #wake (): void {
    const arrived = this.#arrived
    this.#arrived = undefined
    arrived?.()
  }
}

export function tee (source: AsyncIterable<Uint8Array>, count: number): TeeConsumer[] {
  const boxes = Array.from({ length: count }, () => new Mailbox())
  let started = false
  const start = (): void => {
    if (started) return
    started = true
    void (async () => {
      try {
        for await (const chunk of source) {
          const open = boxes.filter(b => !b.closed)
          if (open.length === 0) return // leaving the loop closes the source
          await Promise.all(open.map(async b => await b.put(chunk)))
        }
        for (const b of boxes) b.finish()
      } catch (err) {
        for (const b of boxes) b.finish(err)
      }
    })()
  }
  return boxes.map(box => ({
    close: () => box.close(),
    [Symbol.asyncIterator]: () => ({
      next: async () => await box.take(start),
      return: async () => { box.close(); return { done: true, value: undefined } }
    })
  }))
}
