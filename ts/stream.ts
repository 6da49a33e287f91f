import type { Call } from './call.js'
import { native } from './errors.js'
import type { RatRequest } from './request.js'

/**
 * Pending text (SSE data, chunked strings) is collected in JS and handed to the engine in
 * one native call: when it reaches this many UTF-16 units, before any other operation on
 * the stream, and at the latest at the end of the current event-loop turn (setImmediate,
 * which runs after every promise continuation of the turn). A generator producing 100
 * events thus crosses into the engine once, not 100 times.
 */
export const FLUSH_AT = 16 * 1024

// Streams with collected writes, flushed together once per event-loop turn.
let pendingStreams: BaseStream[] = []
let flushScheduled = false

function flushPending(): void {
  flushScheduled = false
  const list = pendingStreams
  pendingStreams = []
  for (const s of list) s._flushLater()
}

/** What SSE and chunked streams share: head control, backpressure, end, close signal. */
export abstract class BaseStream {
  /** @internal */
  protected readonly call: Call
  readonly #req: RatRequest<unknown>
  #onClose: Array<() => void> = []
  /** The engine's last answer: its queue was below the high-water mark. */
  #below = true
  /** Ended by the handler, or the client has gone: writes return false. */
  #done = false
  /** In the flush list of this turn. */
  #listed = false
  #ready: { promise: Promise<boolean>; resolve: (ok: boolean) => void } | null = null

  constructor(call: Call, req: RatRequest<unknown>) {
    this.call = call
    this.#req = req
  }

  /**
   * Writes what the subclass collected, in one native call; returns the engine's answer,
   * or undefined when nothing was pending.
   * @internal
   */
  protected abstract writePending(): boolean | undefined

  /** @internal Drops what was collected (the client has gone). */
  protected abstract dropPending(): void

  /**
   * Hands collected writes to the engine now; returns whether more may be written.
   * @internal
   */
  _flush(): boolean {
    this.#listed = false
    const r = this.writePending()
    if (r !== undefined) this.#below = r
    return this.#below && !this.#done
  }

  /**
   * The end-of-turn flush: no caller to throw to (an exception in a setImmediate callback
   * would take the process down), so a failure fails the stream instead.
   * @internal
   */
  _flushLater(): void {
    try {
      this._flush()
    } catch (err) {
      this.#done = true
      try {
        this.call.fail(err instanceof Error ? err.message : String(err))
      } catch {
        // Already answered, or the client has gone.
      }
    }
  }

  /**
   * Called by subclasses after collecting a write of `size` units in total pending: flushes
   * at `FLUSH_AT`, otherwise makes sure the turn's flush will include this stream.
   * @internal
   */
  protected collected(pending: number): boolean {
    if (pending >= FLUSH_AT) return this._flush()
    if (!this.#listed) {
      this.#listed = true
      pendingStreams.push(this)
      if (!flushScheduled) {
        flushScheduled = true
        setImmediate(flushPending)
      }
    }
    return this.#below && !this.#done
  }

  /**
   * Records the answer of a direct (uncollected) native write.
   * @internal
   */
  protected wrote(below: boolean): boolean {
    this.#below = below
    return below
  }

  /** True once `end()` was called or the client has gone: writes are dropped. */
  protected get done(): boolean {
    return this.#done
  }

  /** Sets the status; only before the first write. */
  status(code: number): this {
    this._flush()
    native(() => this.call.setStatus(code))
    return this
  }

  /** Adds a response header; only before the first write. */
  header(name: string, value: string): this {
    this._flush()
    native(() => this.call.appendHeader(name, value))
    return this
  }

  /** True once the client has gone or the stream has ended. */
  get closed(): boolean {
    return this.#done || this.call.closed
  }

  /** Bytes queued in the engine and not yet sent. */
  get buffered(): number {
    this._flush()
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
    this._flush()
    if (this.#ready) return this.#ready.promise
    if (this.#done) return Promise.resolve(false)
    switch (this.call.armReady()) {
      case 0:
        return Promise.resolve(false)
      case 1:
        this.#below = true
        return Promise.resolve(true)
    }
    let resolve!: (ok: boolean) => void
    const promise = new Promise<boolean>((r) => (resolve = r))
    this.#ready = { promise, resolve }
    return promise
  }

  /** The engine reports room in the queue (`ok`), or the stream closed. @internal */
  _ready(ok: boolean): void {
    const waiter = this.#ready
    this.#ready = null
    if (ok) this.#below = true
    waiter?.resolve(ok)
  }

  /** The client has gone: later writes return false, collected ones are dropped. @internal */
  _gone(): void {
    this.#done = true
    this.dropPending()
    this._ready(false)
  }

  /** Sends the head now (otherwise it goes with the first write or when the handler returns). */
  start(): this {
    this._flush()
    this.call.start()
    return this
  }

  /** Ends the response after what is queued. */
  end(): void {
    this._flush()
    this.#done = true
    this.call.end()
    this._ready(false)
  }

  /** Runs `fn` when the client disconnects. */
  onClose(fn: () => void): this {
    this.#onClose.push(fn)
    return this
  }

  /** @internal */
  _closed(): void {
    this._gone()
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
