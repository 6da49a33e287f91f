import type { Call } from './native.js'
import { native } from './errors.js'
import type { RatRequest } from './request.js'

/** What SSE and chunked streams share: head control, backpressure, end, close signal. */
export abstract class BaseStream {
  /** @internal */
  protected readonly call: Call
  readonly #req: RatRequest<unknown>
  #onClose: Array<() => void> = []

  constructor(call: Call, req: RatRequest<unknown>) {
    this.call = call
    this.#req = req
  }

  /** Sets the status; only before the first write. */
  status(code: number): this {
    native(() => this.call.setStatus(code))
    return this
  }

  /** Adds a response header; only before the first write. */
  header(name: string, value: string): this {
    native(() => this.call.appendHeader(name, value))
    return this
  }

  /** True once the client has gone or the stream has ended. */
  get closed(): boolean {
    return this.call.closed
  }

  /** Bytes queued in the engine and not yet sent. */
  get buffered(): number {
    return this.call.buffered
  }

  /** Aborts when the client disconnects. */
  get signal(): AbortSignal {
    return this.#req.signal
  }

  /**
   * Resolves `true` when the queue has room again (after a write returned false), or
   * `false` once the stream is closed.
   */
  ready(): Promise<boolean> {
    if (this.call.closed) return Promise.resolve(false)
    return this.call.ready()
  }

  /** Sends the head now (otherwise it goes with the first write or when the handler returns). */
  start(): this {
    this.call.start()
    return this
  }

  /** Ends the response after what is queued. */
  end(): void {
    this.call.end()
  }

  /** Runs `fn` when the client disconnects. */
  onClose(fn: () => void): this {
    this.#onClose.push(fn)
    return this
  }

  /** @internal */
  _closed(): void {
    const fns = this.#onClose
    this.#onClose = []
    for (const fn of fns) {
      try {
        fn()
      } catch {
        // A close listener's failure must not stop the others.
      }
    }
  }
}
