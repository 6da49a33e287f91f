import { native as call, fromNative, RatError } from './errors.js'
import { native, type NativeChannel, type NativeChannelMetrics, type NativeEngine } from './native.js'
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
  /**
   * With `createApp({ redis })`: false keeps this channel to this process (its publishes
   * stay here, its ids are local). @default true
   */
  redis?: boolean
}

const KEY = Symbol('Channel')

/** Makes a channel (apps make theirs with `app.channel(name)`). */
export let newChannel!: (name: string, options?: ChannelOptions, engine?: NativeEngine) => Channel
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

  private constructor(key: symbol, name: string, options: ChannelOptions, engine: NativeEngine | undefined) {
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'a channel is made by app.channel(name)')
    this.#native = call(() => (engine === undefined ? new native.Channel(name, options) : engine.channel(name, options)))
  }

  static {
    newChannel = (name, options = {}, engine) => new Channel(KEY, name, options, engine)
    nativeChannel = (ch) => ch.#native
  }

  /** The channel's name. */
  get name(): string {
    return this.#native.name
  }

  /**
   * Publishes an event and returns its id: `options.id`, or `<epoch>-<n>` where the epoch
   * names this life of the channel (see the README's Channels section). On a channel shared
   * through Redis it queues the event for Redis and returns `''` (Redis assigns the id:
   * `publishAsync` resolves with it); subscribers here get it once read back from Redis,
   * as everywhere. The same forms as
   * `SseStream.send`: `data` (a string as is, whatever it holds; any other value, plain
   * objects included, as JSON) with the fields in `options`, or an `SseEvent` made by
   * `sseEvent()`.
   *
   * @throws RatError `ERR_INVALID_ARGUMENT` for an unknown option or a value of the wrong
   * type, or an `id` on a shared channel; `ERR_INVALID_FIELD` for an `event` or `id` with
   * CR/LF (or NUL in id); `ERR_REDIS` on a shared channel when the buffer of publishes
   * waiting for Redis is full (nothing is queued).
   * @throws TypeError for data JSON cannot encode (a BigInt, a circular object, a function,
   * a symbol).
   */
  publish(data: unknown, options?: SseEventOptions): string {
    if (options === undefined && typeof data === 'string') return call(() => this.#native.publish(data))
    const args = this.#args(data, options)
    return call(() => this.#native.publish(...args))
  }

  /**
   * Publishes as `publish` does and resolves with the event's id once it is known: at once
   * for a local channel; for a channel shared through Redis (`createApp({ redis })`), when
   * Redis has stored the event and assigned its id. (`publish` on a shared channel queues
   * the event and returns `''`.)
   *
   * @throws RatError as `publish`, and `ERR_REDIS` (thrown at once) when the buffer of
   * publishes waiting for Redis is full: the event is not queued.
   */
  async publishAsync(data: unknown, options?: SseEventOptions): Promise<string> {
    const args = this.#args(data, options)
    try {
      return await call(() => this.#native.publishAsync(...args))
    } catch (err) {
      throw fromNative(err)
    }
  }

  #args(data: unknown, options: SseEventOptions | undefined): Parameters<NativeChannel['publish']> {
    if (options === undefined && typeof data === 'string') return [data]
    const args = eventArgs(data, options)
    if (args !== null) return args
    if (data === undefined) throw new RatError('ERR_INVALID_ARGUMENT', 'publish needs data (a string or a JSON value) or an SseEvent')
    return [jsonText(data, "an SSE event's data")]
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
