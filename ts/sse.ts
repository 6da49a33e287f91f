import type { Call } from './call.js'
import { native, RatError } from './errors.js'
import { nativeChannel, type Channel } from './channel.js'
import { jsonText } from './reply.js'
import type { RatRequest } from './request.js'
import { BaseStream, collected, flush, initStream, isDone, wrote } from './stream.js'

/**
 * The fields of an SSE event besides its data, given to `stream.send(data, options)`,
 * `channel.publish(data, options)` and `sseEvent(data, options)`.
 */
export interface SseEventOptions {
  /** Event name (no CR/LF): the client's `addEventListener(name)` receives it; without it, `message`. */
  event?: string
  /** Event id (no CR/LF/NUL); the client sends the last one back as Last-Event-ID. */
  id?: string | number
  /** Reconnection delay for the client, in ms. */
  retry?: number
}

const KEY = Symbol('sse')

let makeEvent!: (data: unknown, fields: EventFields) => SseEvent
let fieldsOf!: (e: SseEvent) => EventFields

/**
 * An SSE event with its fields, made by `sseEvent(data, options)`: what a generator yields
 * for a named event, an id or a retry. Anything else yielded (or sent) is data: a string as
 * is, any other value as JSON.
 */
export class SseEvent {
  /** The event's data: a string is sent as is, any other value as JSON; undefined sends none. */
  readonly data: unknown
  readonly #fields: EventFields

  private constructor(key: symbol, data: unknown, fields: EventFields) {
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'an SSE event is made by sseEvent(data, options)')
    this.data = data
    this.#fields = fields
  }

  /** Event name, if any. */
  get event(): string | undefined {
    return this.#fields[0]
  }
  /** Event id, if any. */
  get id(): string | undefined {
    return this.#fields[1]
  }
  /** Reconnection delay in ms, if any. */
  get retry(): number | undefined {
    return this.#fields[2]
  }

  static {
    makeEvent = (data, fields) => new SseEvent(KEY, data, fields)
    fieldsOf = (e) => e.#fields
  }
}

/** `[event, id, retry]` as the engine takes them. */
type EventFields = readonly [string | undefined, string | undefined, number | undefined]
const NO_FIELDS: EventFields = [undefined, undefined, undefined]

/**
 * Checks options at run time as their type does at compile time.
 * @throws RatError `ERR_INVALID_ARGUMENT` for an unknown key or a value of the wrong type.
 */
function eventFields(options: SseEventOptions | undefined): EventFields {
  if (options === undefined) return NO_FIELDS
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new RatError('ERR_INVALID_ARGUMENT', `SSE event options must be an object { event?, id?, retry? }, not ${options === null ? 'null' : typeof options}`)
  }
  for (const k in options) {
    if (k !== 'event' && k !== 'id' && k !== 'retry') {
      throw new RatError('ERR_INVALID_ARGUMENT', `unknown SSE event option "${k}": use event, id or retry`)
    }
  }
  const { event, id, retry } = options
  if (event !== undefined && typeof event !== 'string') {
    throw new RatError('ERR_INVALID_ARGUMENT', `an SSE event name must be a string, not ${typeof event}`)
  }
  if (id !== undefined && typeof id !== 'string' && !(typeof id === 'number' && Number.isFinite(id))) {
    throw new RatError('ERR_INVALID_ARGUMENT', `an SSE event id must be a string or a finite number, not ${String(id)}`)
  }
  if (retry !== undefined && !(Number.isInteger(retry) && retry >= 0 && retry <= 0xffffffff)) {
    throw new RatError('ERR_INVALID_ARGUMENT', `an SSE retry must be a whole number of ms (0..4294967295), not ${String(retry)}`)
  }
  return [event, id === undefined ? undefined : String(id), retry]
}

/**
 * An SSE event with fields, for a generator to yield (or to pass to `send`/`publish`):
 * `yield sseEvent({ n: 1 }, { event: 'tick', id: 7 })`. `data` is sent as is when a
 * string, as JSON otherwise; `undefined` sends an event without data (a named one still
 * reaches the client's listener, with empty data).
 *
 * @throws RatError `ERR_INVALID_ARGUMENT` for an unknown option or a value of the wrong type.
 */
export function sseEvent(data: unknown, options?: SseEventOptions): SseEvent {
  return makeEvent(data, eventFields(options))
}

/** Data as the engine takes it: a string as is, any other value as JSON, undefined as none. */
function eventData(data: unknown): string | undefined {
  return data === undefined || typeof data === 'string' ? data : jsonText(data, "an SSE event's data")
}

/**
 * The native `sendEvent`/`publish` arguments of `data` sent with `options`, or of an
 * `SseEvent` (then without options); null for data sent without fields.
 */
export function eventArgs(
  data: unknown,
  options: SseEventOptions | undefined,
): [string | undefined, string | undefined, string | undefined, number | undefined] | null {
  if (data instanceof SseEvent) {
    if (options !== undefined) throw new RatError('ERR_INVALID_ARGUMENT', 'an SseEvent carries its own fields: send it without options')
    const [event, id, retry] = fieldsOf(data)
    return [eventData(data.data), event, id, retry]
  }
  if (options === undefined) return null
  const [event, id, retry] = eventFields(options)
  return [eventData(data), event, id, retry]
}

/** Makes the stream of an SSE request. */
export let newSseStream!: (call: Call, req: RatRequest<unknown>, fail: (err: unknown) => void) => SseStream

/**
 * An SSE response stream: `send(data, options?)` sends events, `comment(text)` comments,
 * `writeRaw(frame)` already-encoded frames.
 */
export class SseStream extends BaseStream {
  /** Data of data-only events collected this turn (see `FLUSH_AT`). */
  #batch: string[] = []
  #batchSize = 0
  /** Some collected data holds NUL, so the batch cannot cross as one NUL-joined string. */
  #batchNul = false

  #call!: Call

  private constructor(key: symbol) {
    super()
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'an SSE stream is made by the app for its handler')
  }

  static {
    newSseStream = (call, req, fail) => {
      const s = new SseStream(KEY)
      s.#call = call
      initStream(s, call, req, { write: () => s.#writePending(), drop: () => s.#dropPending(), fail })
      return s
    }
  }

  #writePending(): boolean | undefined {
    if (this.#batch.length === 0) return undefined
    const items = this.#batch
    const nul = this.#batchNul
    this.#batch = []
    this.#batchSize = 0
    this.#batchNul = false
    // One string converts much faster than an array of them.
    return nul ? this.#call.sendDataBatch(items) : this.#call.sendDataJoined(items.join('\0'))
  }

  #dropPending(): void {
    this.#batch = []
    this.#batchSize = 0
    this.#batchNul = false
  }

  #data(data: string): boolean {
    if (isDone(this)) return false
    if (!this.#batchNul && data.includes('\0')) this.#batchNul = true
    this.#batch.push(data)
    this.#batchSize += data.length
    return collected(this, this.#batchSize)
  }

  /**
   * Sends one event: `data` (a string as is, one `data:` line per line, whatever it
   * holds; any other value, plain objects included, as JSON) with the fields in
   * `options`, or an `SseEvent` made by `sseEvent()`. Returns `false` when the engine's
   * queue is at its high-water mark (await `ready()` before sending more) or the stream is
   * closed (see `closed`).
   *
   * Data-only events are collected and handed to the engine together (see `FLUSH_AT`);
   * their order with every other write is kept.
   *
   * @throws RatError `ERR_INVALID_ARGUMENT` for an unknown option or a value of the wrong
   * type; `ERR_INVALID_FIELD` for an `event` or `id` with CR/LF (or NUL in id).
   * @throws TypeError for data JSON cannot encode (a BigInt, a circular object, a function,
   * a symbol; undefined without options).
   */
  send(data: unknown, options?: SseEventOptions): boolean {
    if (options === undefined && typeof data === 'string') return this.#data(data)
    const args = eventArgs(data, options)
    if (args === null) return this.#data(jsonText(data, "an SSE event's data"))
    flush(this)
    return wrote(this, native(() => this.#call.sendEvent(...args)))
  }

  /**
   * Writes already-encoded SSE text as is: complete frames, each ending with a blank line.
   * Never pass client-controlled text: it can set any field, `event` and `id` included.
   */
  writeRaw(frame: string): boolean {
    flush(this)
    return wrote(this, this.#call.writeString(frame))
  }

  /** Sends a comment line (clients ignore it). */
  comment(text: string): boolean {
    flush(this)
    return wrote(this, this.#call.comment(text))
  }

  /**
   * Subscribes this stream to a channel: replays what the client missed after its
   * Last-Event-ID, then every event published, without JS per event. Events sent with
   * `send` before or after keep their order relative to it.
   *
   * A stream subscribed to several channels resumes each of them: after each piece a
   * channel hands it, it gets an event named `position` (empty data; `onmessage` never sees
   * it) whose id names its position in every channel (`@a=<id>&b=<id>`), so the browser
   * reconnects with one Last-Event-ID that resumes every channel after its own position.
   * The first `subscribe` of a stream decides where it resumes from (`lastEventId`).
   *
   * @returns events replayed, or -1 when the id was older than history (a `missed`
   * event was sent first).
   */
  subscribe(channel: Channel, lastEventId: string | null = this.#call.lastEventId): number {
    flush(this)
    return native(() => this.#call.subscribe(nativeChannel(channel), lastEventId))
  }
}
