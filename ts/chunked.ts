import type { Call } from './call.js'
import { RatError } from './errors.js'
import { jsonText } from './reply.js'
import type { RatRequest } from './request.js'
import { BaseStream, collected, flush, initStream, isDone } from './stream.js'

/**
 * Bytes written in one turn are collected until they reach this many, then handed to the
 * engine in one native call and one vectored send. On loopback, 8 writes of 64 KiB sent
 * as one cost the kernel 9 segments instead of 16 and one syscall instead of 8 (see
 * docs/benchmarks.md); the engine's queue bounds what a slow client pins, this only how
 * many writes share a send.
 */
export const BYTES_FLUSH_AT = 512 * 1024

/** At most this many buffers are collected into one send (a `writev` takes ~1024). */
const MAX_COLLECTED_BUFFERS = 64

const KEY = Symbol('ChunkedStream')

/** Makes the stream of a chunked or NDJSON request. */
export let newChunkedStream!: (call: Call, req: RatRequest<unknown>, ndjson: boolean, fail: (err: unknown) => void) => ChunkedStream

/** A chunked response stream: write strings and bytes (or, on NDJSON routes, values). */
export class ChunkedStream extends BaseStream {
  #call!: Call
  #ndjson = false

  private constructor(key: symbol) {
    super()
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'a chunked stream is made by the app for its handler')
  }

  static {
    newChunkedStream = (call, req, ndjson, fail) => {
      const s = new ChunkedStream(KEY)
      s.#call = call
      s.#ndjson = ndjson
      initStream(s, call, req, { write: () => s.#writePending(), drop: () => s.#dropPending(), fail })
      return s
    }
  }

  /** Strings collected this turn (see `FLUSH_AT`); V8 joins them cheaply. */
  #text = ''
  /** Bytes collected this turn, held by reference (see `BYTES_FLUSH_AT`). */
  #bytes: Uint8Array[] = []
  #byteCount = 0

  #writePending(): boolean | undefined {
    // Only one kind is ever pending: a write of the other kind flushes first.
    if (this.#bytes.length > 0) {
      const bytes = this.#bytes
      this.#bytes = []
      this.#byteCount = 0
      return bytes.length === 1 ? this.#call.writeBuffer(bytes[0]) : this.#call.writeBuffers(bytes)
    }
    if (this.#text === '') return undefined
    const text = this.#text
    this.#text = ''
    return this.#call.writeString(text)
  }

  #dropPending(): void {
    this.#text = ''
    this.#bytes = []
    this.#byteCount = 0
  }

  #queueText(text: string): boolean {
    if (isDone(this)) return false
    if (this.#bytes.length > 0) flush(this)
    this.#text += text
    return collected(this, this.#text.length)
  }

  #queueBytes(chunk: Uint8Array): boolean {
    if (isDone(this)) return false
    if (this.#text !== '') flush(this)
    if (chunk.byteLength === 0) return collected(this, 0)
    this.#bytes.push(chunk)
    this.#byteCount += chunk.byteLength
    if (this.#byteCount >= BYTES_FLUSH_AT || this.#bytes.length >= MAX_COLLECTED_BUFFERS) return flush(this)
    return collected(this, 0)
  }

  /**
   * Writes a chunk: a string, bytes, or (on NDJSON routes) any JSON value as one line.
   * Returns `false` when the queue is at its high-water mark (await `ready()`) or the
   * stream is closed (see `closed`).
   *
   * Writes are collected and handed to the engine together: strings at `FLUSH_AT`, bytes
   * at `BYTES_FLUSH_AT`, before any other operation on the stream, and at the latest at
   * the end of the current event-loop turn. Bytes are held by reference until then, as a
   * Node socket holds them until written: do not modify a buffer after writing it (write
   * a copy if you reuse one). Collected bytes go to the socket in one vectored send.
   *
   * @throws TypeError for a value JSON cannot encode (a BigInt, a circular object, a
   * function, a symbol, undefined).
   */
  write(chunk: string | Uint8Array | unknown): boolean {
    if (chunk instanceof Uint8Array) return this.#queueBytes(chunk)
    if (this.#ndjson) return this.#queueText(jsonText(chunk, 'an NDJSON value') + '\n')
    if (typeof chunk === 'string') return this.#queueText(chunk)
    return this.#queueText(jsonText(chunk, 'a chunk'))
  }
}
