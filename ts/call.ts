import { fromNative } from './errors.js'
import { native, type KeptCall, type NativeChannel, type WsRouteOptions, type WsSocket } from './native.js'

/**
 * One request and its response. While the dispatch call that brought it runs, it lives in
 * the engine's thread-local batch and is read and answered through plain native functions
 * addressed by `(seq, i)`: a request answered at once costs no native object. `keep()`
 * takes it out of the batch into a native object of its own, for a handler that answers
 * later (a promise), a stream, or an operation the batch functions do not offer; it then
 * holds only its own state, never the other requests of its batch. The engine releases
 * what was not kept when the dispatch call returns. @internal
 */
export class Call {
  #seq: number
  #i: number
  /** Set once kept. */
  #kept: KeptCall | null = null

  constructor(
    seq: number,
    i: number,
    /** Id used in closed-stream and ready notices. */
    readonly id: number,
  ) {
    this.#seq = seq
    this.#i = i
  }

  /** Keeps the request (only this one) past the dispatch call. */
  keep(): void {
    this.#own()
  }

  #own(): KeptCall {
    if (this.#kept !== null) return this.#kept
    try {
      return (this.#kept = native.takeCall(this.#seq, this.#i))
    } catch (err) {
      throw fromNative(err)
    }
  }

  // The reads and answers of a handler that answers at once go to the batch functions
  // until the request is kept; the other operations keep it.
  get method(): string {
    const k = this.#kept
    try {
      return k === null ? native.batchMethod(this.#seq, this.#i) : k.method()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get path(): string {
    const k = this.#kept
    try {
      return k === null ? native.batchPath(this.#seq, this.#i) : k.path()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get queryString(): string | null {
    const k = this.#kept
    try {
      return k === null ? native.batchQueryString(this.#seq, this.#i) : k.queryString()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get rawHeaders(): string[] {
    const k = this.#kept
    try {
      return k === null ? native.batchRawHeaders(this.#seq, this.#i) : k.rawHeaders()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get rawParams(): string[] {
    const k = this.#kept
    try {
      return k === null ? native.batchRawParams(this.#seq, this.#i) : k.rawParams()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get body(): Buffer {
    const k = this.#kept
    try {
      return k === null ? native.batchBody(this.#seq, this.#i) : k.body()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get bodyStreamed(): boolean {
    const k = this.#kept
    try {
      return k === null ? native.batchBodyStreamed(this.#seq, this.#i) : k.bodyStreamed()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get remoteAddress(): string | null {
    const k = this.#kept
    try {
      return k === null ? native.batchRemoteAddress(this.#seq, this.#i) : k.remoteAddress()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get remotePort(): number | null {
    const k = this.#kept
    try {
      return k === null ? native.batchRemotePort(this.#seq, this.#i) : k.remotePort()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get lastEventId(): string | null {
    const k = this.#kept
    try {
      return k === null ? native.batchLastEventId(this.#seq, this.#i) : k.lastEventId()
    } catch (err) {
      throw fromNative(err)
    }
  }
  get started(): boolean {
    const k = this.#kept
    try {
      return k === null ? native.batchStarted(this.#seq, this.#i) : k.started()
    } catch (err) {
      throw fromNative(err)
    }
  }
  /** Answers a WebSocket route's upgrade: the socket, or null when the engine refused an invalid upgrade. */
  acceptWs(options: WsRouteOptions): WsSocket | null {
    const k = this.#kept
    try {
      return k === null ? native.batchAcceptWs(this.#seq, this.#i, options) : k.acceptWs(options)
    } catch (err) {
      throw fromNative(err)
    }
  }
  /** `acceptWs` with no socket object until the socket's first event (`Engine.takeWs`, tag `tag`): false when refused. */
  acceptWsLazy(options: WsRouteOptions, tag: number): boolean {
    const k = this.#kept
    try {
      return k === null ? native.batchAcceptWsLazy(this.#seq, this.#i, options, tag) : k.acceptWsLazy(options, tag)
    } catch (err) {
      throw fromNative(err)
    }
  }
  respond(status: number, headers?: string[] | null, body?: string | null): void {
    const k = this.#kept
    try {
      if (k === null) native.batchRespond(this.#seq, this.#i, status, headers, body)
      else k.respond(status, headers, body)
    } catch (err) {
      throw fromNative(err)
    }
  }
  respondBuffer(status: number, headers: string[] | null | undefined, body: Uint8Array): void {
    const k = this.#kept
    try {
      if (k === null) native.batchRespondBuffer(this.#seq, this.#i, status, headers, body)
      else k.respondBuffer(status, headers, body)
    } catch (err) {
      throw fromNative(err)
    }
  }
  respondError(status: number, message: string, headers: string[] | null): void {
    const k = this.#kept
    try {
      if (k === null) native.batchRespondError(this.#seq, this.#i, status, message, headers)
      else k.respondError(status, message, headers)
    } catch (err) {
      throw fromNative(err)
    }
  }

  readChunk(): Promise<Buffer | null> {
    return this.#own().readChunk()
  }
  get closed(): boolean {
    return this.#own().closed()
  }
  get buffered(): number {
    return this.#own().buffered()
  }
  setStatus(status: number): void {
    this.#own().setStatus(status)
  }
  appendHeader(name: string, value: string): void {
    this.#own().appendHeader(name, value)
  }
  start(): void {
    this.#own().start()
  }
  writeString(chunk: string): boolean {
    return this.#own().writeString(chunk)
  }
  writeBuffer(chunk: Uint8Array): boolean {
    return this.#own().writeBuffer(chunk)
  }
  writeBuffers(chunks: Uint8Array[]): boolean {
    return this.#own().writeBuffers(chunks)
  }
  sendEvent(data?: string | null, event?: string | null, id?: string | null, retry?: number | null): boolean {
    return this.#own().sendEvent(data, event, id, retry)
  }
  sendDataBatch(items: string[]): boolean {
    return this.#own().sendDataBatch(items)
  }
  sendDataJoined(joined: string): boolean {
    return this.#own().sendDataJoined(joined)
  }
  comment(text: string): boolean {
    return this.#own().comment(text)
  }
  end(): void {
    this.#own().end()
  }
  fail(message: string): void {
    this.#own().fail(message)
  }
  armReady(): number {
    return this.#own().armReady()
  }
  subscribe(channel: NativeChannel, lastEventId?: string | null): number {
    return this.#own().subscribe(channel, lastEventId)
  }
}
