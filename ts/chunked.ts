import type { Call } from './call.js'
import type { RatRequest } from './request.js'
import { BaseStream } from './stream.js'

/** A chunked response stream: write strings and bytes (or, on NDJSON routes, values). */
export class ChunkedStream extends BaseStream {
  readonly #ndjson: boolean

  constructor(call: Call, req: RatRequest<unknown>, ndjson: boolean) {
    super(call, req)
    this.#ndjson = ndjson
  }

  /** Strings collected this turn (see `FLUSH_AT`); V8 joins them cheaply. */
  #text = ''

  /** @internal */
  protected writePending(): boolean | undefined {
    if (this.#text === '') return undefined
    const text = this.#text
    this.#text = ''
    return this.call.writeString(text)
  }

  /** @internal */
  protected dropPending(): void {
    this.#text = ''
  }

  #queueText(text: string): boolean {
    if (this.done) return false
    this.#text += text
    return this.collected(this.#text.length)
  }

  /**
   * Writes a chunk: a string, bytes, or (on NDJSON routes) any JSON value as one line.
   * Returns `false` when the queue is at its high-water mark (await `ready()`) or the
   * stream is closed (see `closed`).
   *
   * Strings are collected and handed to the engine together (see `FLUSH_AT`); bytes go at
   * once (straight to the socket when it has room, else copied), after what was collected.
   */
  write(chunk: string | Uint8Array | unknown): boolean {
    if (chunk instanceof Uint8Array) {
      this._flush()
      return this.wrote(this.call.writeBuffer(chunk))
    }
    if (this.#ndjson) return this.#queueText(JSON.stringify(chunk) + '\n')
    if (typeof chunk === 'string') return this.#queueText(chunk)
    return this.#queueText(JSON.stringify(chunk))
  }
}
