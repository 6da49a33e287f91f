import { native as call, RatError } from './errors.js'
import { native, type NativeChannel, type NativeChannelMetrics } from './native.js'
import { jsonText } from './reply.js'
import { eventArgs, type SseEventOptions } from './sse.js'

/** Options of a channel. */
export interface ChannelOptions {
  /** Events kept for Last-Event-ID replay; 0 turns history off. @default 1000 */
  history?: number
  /** Bytes of encoded events kept for replay. @default 4194304 */
  historyBytes?: number
  /** Age in ms after which events leave history. */
  historyMaxAgeMs?: number
  /**
   * What to do with a subscriber that falls behind: `'close'` ends its connection (the
   * browser reconnects and resumes from history), `'drop-oldest'` drops its oldest queued
   * events and counts them. @default 'close'
   */
  slowClient?: 'close' | 'drop-oldest'
  /**
   * Bytes queued for a subscriber whose socket is full before the policy applies (a
   * subscriber that reads is not judged by the size of a burst). @default 65536
   */
  highWaterMark?: number
}

const KEY = Symbol('Channel')

/** Makes a channel (apps make theirs with `app.channel(name)`). */
export let newChannel!: (name: string, options?: ChannelOptions) => Channel
/** The engine's channel behind a `Channel`. */
export let nativeChannel!: (ch: Channel) => NativeChannel

/**
 * A broadcast channel, made by `app.channel(name)`. `publish` is one call into the engine whatever the number of
 * subscribers: the event is encoded once, and the engine's fan-out task (on its own
 * thread) hands the same bytes to every subscriber, in publish order, writing them straight
 * to the socket when nothing waits there. `publish` returns before that is done:
 * `metrics().delivered` follows shortly after.
 */
export class Channel {
  readonly #native: NativeChannel

  private constructor(key: symbol, name: string, options: ChannelOptions) {
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'a channel is made by app.channel(name)')
    this.#native = call(() => new native.Channel(name, options))
  }

  static {
    newChannel = (name, options = {}) => new Channel(KEY, name, options)
    nativeChannel = (ch) => ch.#native
  }

  /** The channel's name. */
  get name(): string {
    return this.#native.name
  }

  /**
   * Publishes an event and returns its id: `options.id`, or `<epoch>-<n>` where the epoch
   * names this life of the channel (see the README's Channels section). The same forms as
   * `SseStream.send`: `data` (a string as is, whatever it holds; any other value, plain
   * objects included, as JSON) with the fields in `options`, or an `SseEvent` made by
   * `sseEvent()`.
   *
   * @throws RatError `ERR_INVALID_ARGUMENT` for an unknown option or a value of the wrong
   * type; `ERR_INVALID_FIELD` for an `event` or `id` with CR/LF (or NUL in id).
   * @throws TypeError for data JSON cannot encode (a BigInt, a circular object, a function,
   * a symbol).
   */
  publish(data: unknown, options?: SseEventOptions): string {
    if (options === undefined && typeof data === 'string') return call(() => this.#native.publish(data))
    const args = eventArgs(data, options)
    if (args !== null) return call(() => this.#native.publish(...args))
    if (data === undefined) throw new RatError('ERR_INVALID_ARGUMENT', 'publish needs data (a string or a JSON value) or an SseEvent')
    const text = jsonText(data, "an SSE event's data")
    return call(() => this.#native.publish(text))
  }

  /** Sends a comment line to every subscriber (not kept in history). */
  comment(text: string): void {
    call(() => this.#native.comment(text))
  }

  /** Subscribers now. */
  get subscribers(): number {
    return this.#native.subscribers
  }

  /** True after `close()`. */
  get closed(): boolean {
    return this.#native.closed
  }

  /** Counters: subscribers, published, delivered, dropped, replayed, closedSlow. */
  metrics(): NativeChannelMetrics {
    return this.#native.metrics()
  }

  /** Ends every subscriber's stream; later publishes throw. */
  close(): void {
    this.#native.close()
  }
}
