import { fromNative } from './errors.js'
import { native, type Calls, type NativeChannel } from './native.js'

/**
 * The requests of one dispatch call. While the call runs they live in the engine's
 * thread-local batch and are read and answered through plain native functions addressed
 * by `(seq, i)`: a batch answered at once costs no native object. `keep()` moves what is
 * left of the batch into a `Calls` object, for handlers that answer later (a promise) or
 * use something other than the hot operations; the engine releases whatever was not kept
 * when the dispatch call returns. @internal
 */
export class Batch {
  constructor(
    readonly seq: number,
    public calls: Calls | null = null,
  ) {}

  /** The batch's requests as a native object that outlives the dispatch call. */
  keep(): Calls {
    return (this.calls ??= native.keepBatch(this.seq))
  }
}

/**
 * One request of a dispatch batch and its response: the batch and the request's index in
 * it. A plain JS object, so a request costs no native object (and no finalizer) of its
 * own. @internal
 */
export class Call {
  constructor(
    readonly batch: Batch,
    readonly i: number,
    /** Id used in closed-stream and ready notices. */
    readonly id: number,
  ) {}

  /** Keeps the request (and the rest of its batch) past the dispatch call. */
  keep(): void {
    this.#kept()
  }

  /** The same request in a native batch of its own: a stream holds only its own state. */
  detach(): Call {
    const calls = this.batch.calls
    if (calls === null) {
      try {
        return new Call(new Batch(-1, native.takeCall(this.batch.seq, this.i)), 0, this.id)
      } catch (err) {
        throw fromNative(err)
      }
    }
    if (calls.length === 1) return this
    return new Call(new Batch(-1, calls.detach(this.i)), 0, this.id)
  }

  #kept(): Calls {
    try {
      return this.batch.keep()
    } catch (err) {
      throw fromNative(err)
    }
  }

  // The operations of a handler that answers at once go to the batch functions until the
  // batch is kept; the others keep it.
  get method(): string {
    const b = this.batch
    try {
      return b.calls === null ? native.batchMethod(b.seq, this.i) : b.calls.method(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get path(): string {
    const b = this.batch
    try {
      return b.calls === null ? native.batchPath(b.seq, this.i) : b.calls.path(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get queryString(): string | null {
    const b = this.batch
    try {
      return b.calls === null ? native.batchQueryString(b.seq, this.i) : b.calls.queryString(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get rawHeaders(): string[] {
    const b = this.batch
    try {
      return b.calls === null ? native.batchRawHeaders(b.seq, this.i) : b.calls.rawHeaders(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get rawParams(): string[] {
    const b = this.batch
    try {
      return b.calls === null ? native.batchRawParams(b.seq, this.i) : b.calls.rawParams(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get body(): Buffer {
    const b = this.batch
    try {
      return b.calls === null ? native.batchBody(b.seq, this.i) : b.calls.body(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  get bodyStreamed(): boolean {
    const b = this.batch
    try {
      return b.calls === null ? native.batchBodyStreamed(b.seq, this.i) : b.calls.bodyStreamed(this.i)
    } catch (err) {
      throw fromNative(err)
    }
  }
  respond(status: number, headers?: string[] | null, body?: string | null): void {
    const b = this.batch
    try {
      if (b.calls === null) native.batchRespond(b.seq, this.i, status, headers, body)
      else b.calls.respond(this.i, status, headers, body)
    } catch (err) {
      throw fromNative(err)
    }
  }
  respondBuffer(status: number, headers: string[] | null | undefined, body: Uint8Array): void {
    const b = this.batch
    try {
      if (b.calls === null) native.batchRespondBuffer(b.seq, this.i, status, headers, body)
      else b.calls.respondBuffer(this.i, status, headers, body)
    } catch (err) {
      throw fromNative(err)
    }
  }

  readChunk(): Promise<Buffer | null> {
    return this.#kept().readChunk(this.i)
  }
  get remoteAddress(): string | null {
    return this.#kept().remoteAddress(this.i)
  }
  get remotePort(): number | null {
    return this.#kept().remotePort(this.i)
  }
  get lastEventId(): string | null {
    return this.#kept().lastEventId(this.i)
  }
  get started(): boolean {
    return this.#kept().started(this.i)
  }
  get closed(): boolean {
    return this.#kept().closed(this.i)
  }
  get buffered(): number {
    return this.#kept().buffered(this.i)
  }
  setStatus(status: number): void {
    this.#kept().setStatus(this.i, status)
  }
  appendHeader(name: string, value: string): void {
    this.#kept().appendHeader(this.i, name, value)
  }
  start(): void {
    this.#kept().start(this.i)
  }
  writeString(chunk: string): boolean {
    return this.#kept().writeString(this.i, chunk)
  }
  writeBuffer(chunk: Uint8Array): boolean {
    return this.#kept().writeBuffer(this.i, chunk)
  }
  writeBuffers(chunks: Uint8Array[]): boolean {
    return this.#kept().writeBuffers(this.i, chunks)
  }
  sendEvent(data?: string | null, event?: string | null, id?: string | null, retry?: number | null): boolean {
    return this.#kept().sendEvent(this.i, data, event, id, retry)
  }
  sendDataBatch(items: string[]): boolean {
    return this.#kept().sendDataBatch(this.i, items)
  }
  sendDataJoined(joined: string): boolean {
    return this.#kept().sendDataJoined(this.i, joined)
  }
  comment(text: string): boolean {
    return this.#kept().comment(this.i, text)
  }
  end(): void {
    this.#kept().end(this.i)
  }
  fail(message: string): void {
    this.#kept().fail(this.i, message)
  }
  armReady(): number {
    return this.#kept().armReady(this.i)
  }
  subscribe(channel: NativeChannel, lastEventId?: string | null): number {
    return this.#kept().subscribe(this.i, channel, lastEventId)
  }
}
