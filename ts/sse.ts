import type { Call } from './call.js'
import { native } from './errors.js'
import type { Channel } from './channel.js'
import { jsonText } from './reply.js'
import type { RatRequest } from './request.js'
import { BaseStream } from './stream.js'
import type { SseEvent } from './types.js'

const EVENT_KEYS = new Set(['data', 'event', 'id', 'retry', 'comment'])

/** True for `{ data?, event?, id?, retry?, comment? }` with `data` or `event` present. */
export function isSseEvent(v: unknown): v is SseEvent {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Buffer.isBuffer(v)) return false
  const keys = Object.keys(v)
  return keys.length > 0 && keys.every((k) => EVENT_KEYS.has(k)) && ('data' in v || 'event' in v || 'comment' in v)
}

/**
 * The native `sendEvent`/`publish` arguments of an event: data as a string (JSON unless
 * it is one), id as a string. (The engine gives a named event without data its empty
 * `data` line.)
 */
export function eventArgs(e: SseEvent): [string | undefined, string | undefined, string | undefined, number | undefined] {
  const data = e.data === undefined || typeof e.data === 'string' ? e.data : jsonText(e.data, "an SSE event's data")
  return [data, e.event, e.id === undefined ? undefined : String(e.id), e.retry]
}

/**
 * An SSE response stream. `send` accepts an event object, a string (sent as `data`, one
 * `data:` line per line, whatever it holds), or any other value (sent as JSON data).
 */
export class SseStream extends BaseStream {
  /** Data of data-only events collected this turn (see `FLUSH_AT`). */
  #batch: string[] = []
  #batchSize = 0
  /** Some collected data holds NUL, so the batch cannot cross as one NUL-joined string. */
  #batchNul = false

  constructor(call: Call, req: RatRequest<unknown>) {
    super(call, req)
  }

  /** @internal */
  protected writePending(): boolean | undefined {
    if (this.#batch.length === 0) return undefined
    const items = this.#batch
    const nul = this.#batchNul
    this.#batch = []
    this.#batchSize = 0
    this.#batchNul = false
    // One string converts much faster than an array of them.
    return nul ? this.call.sendDataBatch(items) : this.call.sendDataJoined(items.join('\0'))
  }

  /** @internal */
  protected dropPending(): void {
    this.#batch = []
    this.#batchSize = 0
    this.#batchNul = false
  }

  #data(data: string): boolean {
    if (this.done) return false
    if (!this.#batchNul && data.includes('\0')) this.#batchNul = true
    this.#batch.push(data)
    this.#batchSize += data.length
    return this.collected(this.#batchSize)
  }

  /**
   * Sends one event. Returns `false` when the engine's queue is at its high-water mark
   * (await `ready()` before sending more) or the stream is closed (see `closed`).
   *
   * Data-only events are collected and handed to the engine together (see `FLUSH_AT`);
   * their order with every other write is kept.
   *
   * A string is data, always: text that looks like SSE fields (`event: x\nid: 1\n\n`)
   * reaches the client as that text in one `message` event.
   *
   * @throws RatError `ERR_INVALID_FIELD` for an `event` or `id` with CR/LF (or NUL in id).
   * @throws TypeError for data JSON cannot encode (a BigInt, a circular object, a function,
   * a symbol, undefined).
   */
  send(event: SseEvent | string | unknown): boolean {
    if (typeof event === 'string') return this.#data(event)
    if (isSseEvent(event)) {
      const args = eventArgs(event)
      this._flush()
      if (event.comment !== undefined) this.call.comment(event.comment)
      if (event.data === undefined && event.event === undefined && event.id === undefined) return !this.closed
      return this.wrote(native(() => this.call.sendEvent(...args)))
    }
    return this.#data(jsonText(event, "an SSE event's data"))
  }

  /**
   * Writes already-encoded SSE text as is: complete frames, each ending with a blank line.
   * Never pass client-controlled text: it can set any field, `event` and `id` included.
   */
  writeRaw(frame: string): boolean {
    this._flush()
    return this.wrote(this.call.writeString(frame))
  }

  /** Sends `event: name` with `data`. */
  event(name: string, data?: unknown): boolean {
    return this.send({ event: name, data })
  }

  /** Sends a comment line (clients ignore it). */
  comment(text: string): boolean {
    this._flush()
    return this.wrote(this.call.comment(text))
  }

  /**
   * Subscribes this stream to a channel: replays what the client missed after its
   * Last-Event-ID, then every event published, without JS per event. Events sent with
   * `send` before or after keep their order relative to it.
   *
   * @returns events replayed, or -1 when the id was older than history (a `missed`
   * event was sent first).
   */
  subscribe(channel: Channel, lastEventId: string | null = this.lastEventIdOfRequest()): number {
    this._flush()
    return native(() => this.call.subscribe(channel.native, lastEventId))
  }

  private lastEventIdOfRequest(): string | null {
    return this.call.lastEventId
  }
}
