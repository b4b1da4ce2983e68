/**
 * A byte stream that a producer pushes into and one consumer reads as an AsyncIterable (a NAR fed
 * to the chunk store while it is also spooled). At most `max` chunks wait: `push` resolves only when
 * there is room, so a slow consumer slows the producer instead of filling memory. A consumer that
 * stops (returns, or its owner calls `close`) turns later pushes into no-ops, so a failing consumer
 * never holds the producer up.
 */
export class PushQueue implements AsyncIterable<Uint8Array> {
  readonly #max: number
  readonly #chunks: Uint8Array[] = []
  #ended = false
  #error: { reason: unknown } | undefined
  #closed = false
  #wakeConsumer: (() => void) | undefined
  #wakeProducer: (() => void) | undefined

  constructor (max = 4) {
    this.#max = max
  }

  get closed (): boolean { return this.#closed }

  async push (chunk: Uint8Array): Promise<void> {
    while (!this.#closed && this.#chunks.length >= this.#max) {
      await new Promise<void>(resolve => { this.#wakeProducer = resolve })
    }
    if (this.#closed) return
    this.#chunks.push(chunk)
    this.#wake()
  }

  end (): void {
    this.#ended = true
    this.#wake()
  }

  fail (reason: unknown): void {
    this.#error ??= { reason }
    this.#wake()
  }

  /** The consumer is gone: drop what waits and accept nothing more. */
  close (): void {
    this.#closed = true
    this.#chunks.length = 0
    this.#wake()
  }

  #wake (): void {
    const consumer = this.#wakeConsumer
    const producer = this.#wakeProducer
    this.#wakeConsumer = undefined
    this.#wakeProducer = undefined
    consumer?.()
    producer?.()
  }

  [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
    return {
      next: async () => {
        for (;;) {
          if (this.#closed) return { done: true, value: undefined }
          const chunk = this.#chunks.shift()
          if (chunk !== undefined) {
            this.#wake()
            return { done: false, value: chunk }
          }
          if (this.#error !== undefined) throw this.#error.reason
          if (this.#ended) return { done: true, value: undefined }
          await new Promise<void>(resolve => { this.#wakeConsumer = resolve })
        }
      },
      return: async () => {
        this.close()
        return { done: true, value: undefined }
      }
    }
  }
}
