import type { Calls, NativeChannel } from './native.js'

/**
 * One request of a dispatch batch and its response: the batch's native object and the
 * request's index in it. A plain JS object, so a request costs no native object (and no
 * finalizer) of its own. @internal
 */
export class Call {
  constructor(
    readonly calls: Calls,
    readonly i: number,
    /** Id used in closed-stream and ready notices. */
    readonly id: number,
  ) {}

  /** The same request in a native batch of its own: a stream holds only its own state. */
  detach(): Call {
    if (this.calls.length === 1) return this
    return new Call(this.calls.detach(this.i), 0, this.id)
  }

  get method(): string {
    return this.calls.method(this.i)
  }
  get path(): string {
    return this.calls.path(this.i)
  }
  get queryString(): string | null {
    return this.calls.queryString(this.i)
  }
  get rawHeaders(): string[] {
    return this.calls.rawHeaders(this.i)
  }
  get rawParams(): string[] {
    return this.calls.rawParams(this.i)
  }
  get body(): Buffer {
    return this.calls.body(this.i)
  }
  get bodyStreamed(): boolean {
    return this.calls.bodyStreamed(this.i)
  }
  readChunk(): Promise<Buffer | null> {
    return this.calls.readChunk(this.i)
  }
  get remoteAddress(): string | null {
    return this.calls.remoteAddress(this.i)
  }
  get remotePort(): number | null {
    return this.calls.remotePort(this.i)
  }
  get lastEventId(): string | null {
    return this.calls.lastEventId(this.i)
  }
  get started(): boolean {
    return this.calls.started(this.i)
  }
  get closed(): boolean {
    return this.calls.closed(this.i)
  }
  get buffered(): number {
    return this.calls.buffered(this.i)
  }
  respond(status: number, headers?: string[] | null, body?: string | null): void {
    this.calls.respond(this.i, status, headers, body)
  }
  respondBuffer(status: number, headers: string[] | null | undefined, body: Uint8Array): void {
    this.calls.respondBuffer(this.i, status, headers, body)
  }
  setStatus(status: number): void {
    this.calls.setStatus(this.i, status)
  }
  appendHeader(name: string, value: string): void {
    this.calls.appendHeader(this.i, name, value)
  }
  start(): void {
    this.calls.start(this.i)
  }
  writeString(chunk: string): boolean {
    return this.calls.writeString(this.i, chunk)
  }
  writeBuffer(chunk: Uint8Array): boolean {
    return this.calls.writeBuffer(this.i, chunk)
  }
  sendEvent(data?: string | null, event?: string | null, id?: string | null, retry?: number | null): boolean {
    return this.calls.sendEvent(this.i, data, event, id, retry)
  }
  sendDataBatch(items: string[]): boolean {
    return this.calls.sendDataBatch(this.i, items)
  }
  sendDataJoined(joined: string): boolean {
    return this.calls.sendDataJoined(this.i, joined)
  }
  comment(text: string): boolean {
    return this.calls.comment(this.i, text)
  }
  end(): void {
    this.calls.end(this.i)
  }
  fail(message: string): void {
    this.calls.fail(this.i, message)
  }
  armReady(): number {
    return this.calls.armReady(this.i)
  }
  subscribe(channel: NativeChannel, lastEventId?: string | null): number {
    return this.calls.subscribe(this.i, channel, lastEventId)
  }
}
