import type { Call } from './native.js'
import type { RatRequest } from './request.js'
import { BaseStream } from './stream.js'

/** A chunked response stream: write strings and bytes (or, on NDJSON routes, values). */
export class ChunkedStream extends BaseStream {
  readonly #ndjson: boolean

  constructor(call: Call, req: RatRequest<unknown>, ndjson: boolean) {
    super(call, req)
    this.#ndjson = ndjson
  }

  /**
   * Writes a chunk: a string, bytes, or (on NDJSON routes) any JSON value as one line.
   * Returns `false` when the queue is at its high-water mark (await `ready()`) or the
   * stream is closed (see `closed`).
   */
  write(chunk: string | Uint8Array | unknown): boolean {
    if (this.#ndjson && !(chunk instanceof Uint8Array)) {
      return this.call.writeString(JSON.stringify(chunk) + '\n')
    }
    if (typeof chunk === 'string') return this.call.writeString(chunk)
    if (chunk instanceof Uint8Array) return this.call.writeBuffer(chunk)
    return this.call.writeString(JSON.stringify(chunk))
  }
}
