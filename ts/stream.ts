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
  for (const s of list) flushLater(s)
}

/**
 * What a stream is given: how its subclass writes what it collected in one native call
 * (the engine's answer, or undefined when nothing was pending) or drops it, and how the
 * app fails its request.
 */
export interface Pending {
  write(): boolean | undefined
  drop(): void
  fail(err: unknown): void
}

// The operations the app and the subclasses use; not part of a stream's public type.

/** Gives a new stream its request and what its subclass collects. */
export let initStream!: (s: BaseStream, call: Call, req: RatRequest<unknown>, pending: Pending) => void
/** Hands collected writes to the engine now; returns whether more may be written. */
export let flush!: (s: BaseStream) => boolean
/** The end-of-turn flush: a failure fails the stream instead of throwing. */
let flushLater!: (s: BaseStream) => void
/**
 * Called by subclasses after collecting a write of `size` units in total pending: flushes
 * at `FLUSH_AT`, otherwise makes sure the turn's flush will include this stream.
 */
export let collected!: (s: BaseStream, pending: number) => boolean
/** Records the answer of a direct (uncollected) native write. */
export let wrote!: (s: BaseStream, below: boolean) => boolean
/** True once `end()` was called or the client has gone: writes are dropped. */
export let isDone!: (s: BaseStream) => boolean
/** The engine reports room in the queue (`ok`), or the stream closed. */
export let readyNotice!: (s: BaseStream, ok: boolean) => void
/** The client has gone: later writes return false, collected ones are dropped. */
export let gone!: (s: BaseStream) => void
/** The client has gone: `gone`, then the `onClose` listeners. */
export let closedNotice!: (s: BaseStream) => void

/** What SSE and chunked streams share: head control, backpressure, end, close signal. */
export abstract class BaseStream {
  #call!: Call
  #req!: RatRequest<unknown>
  #pending!: Pending
  #onClose: Array<() => void> = []
  /** The engine's last answer: its queue was below the high-water mark. */
  #below = true
  /** Ended by the handler, or the client has gone: writes return false. */
  #done = false
  /** In the flush list of this turn. */
  #listed = false
  #ready: { promise: Promise<boolean>; resolve: (ok: boolean) => void } | null = null

  protected constructor() {}

  #flush(): boolean {
    this.#listed = false
    const r = this.#pending.write()
    if (r !== undefined) this.#below = r
    return this.#below && !this.#done
  }

  #flushLater(): void {
    try {
      this.#flush()
    } catch (err) {
      // No caller to throw to (an exception in a setImmediate callback would take the
      // process down): the app fails the request, as for a handler's error.
      this.#done = true
      this.#pending.fail(err)
    }
  }

  #collected(pending: number): boolean {
    if (pending >= FLUSH_AT) return this.#flush()
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

  #readyNotice(ok: boolean): void {
    const waiter = this.#ready
    this.#ready = null
    if (ok) this.#below = true
    waiter?.resolve(ok)
  }

  #gone(): void {
    this.#done = true
    this.#pending.drop()
    this.#readyNotice(false)
  }

  static {
    initStream = (s, call, req, pending) => {
      s.#call = call
      s.#req = req
      s.#pending = pending
    }
    flush = (s) => s.#flush()
    flushLater = (s) => s.#flushLater()
    collected = (s, pending) => s.#collected(pending)
    wrote = (s, below) => (s.#below = below)
    isDone = (s) => s.#done
    readyNotice = (s, ok) => s.#readyNotice(ok)
    gone = (s) => s.#gone()
    closedNotice = (s) => {
      s.#gone()
      const fns = s.#onClose
      s.#onClose = []
      for (const fn of fns) {
        try {
          fn()
        } catch {
          // A close listener's failure must not stop the others.
        }
      }
    }
  }

  /** Sets the status; only before the first write. */
  status(code: number): this {
    this.#flush()
    native(() => this.#call.setStatus(code))
    return this
  }

  /** Adds a response header; only before the first write. */
  header(name: string, value: string): this {
    this.#flush()
    native(() => this.#call.appendHeader(name, value))
    return this
  }

  /** True once the client has gone or the stream has ended. */
  get closed(): boolean {
    return this.#done || this.#call.closed
  }

  /** Bytes queued in the engine and not yet sent. */
  get buffered(): number {
    this.#flush()
    return this.#call.buffered
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
    this.#flush()
    if (this.#ready) return this.#ready.promise
    if (this.#done) return Promise.resolve(false)
    switch (this.#call.armReady()) {
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

  /** Sends the head now (otherwise it goes with the first write or when the handler returns). */
  start(): this {
    this.#flush()
    this.#call.start()
    return this
  }

  /** Ends the response after what is queued. */
  end(): void {
    this.#flush()
    this.#done = true
    this.#call.end()
    this.#readyNotice(false)
  }

  /** Runs `fn` when the client disconnects. */
  onClose(fn: () => void): this {
    this.#onClose.push(fn)
    return this
  }
}
