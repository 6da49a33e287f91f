import { Channel, type ChannelOptions } from './channel.js'
import { ChunkedStream } from './chunked.js'
import { fromNative, HttpError, native as call } from './errors.js'
import { isIterable, type StreamSource } from './helpers.js'
import { Batch, Call } from './call.js'
import { native, type EngineMetrics, type NativeEngine } from './native.js'
import { pump } from './pump.js'
import { flatHeaders, toWire, type PlainStyle } from './reply.js'
import { RatRequest } from './request.js'
import { SseStream } from './sse.js'
import type { BaseStream } from './stream.js'
import type { PathParams } from './types.js'

/** Options of `createApp`. */
export interface AppOptions {
  /** Heartbeat comment interval on idle SSE streams, in ms; 0 turns it off. @default 15000 */
  heartbeatMs?: number
  /**
   * Bytes queued per stream before writes return false (SSE and byte streams alike when
   * set). @default 65536 for SSE, 262144 for chunked and NDJSON streams (a producer writing
   * 64 KiB chunks then hands over several per wake-up)
   */
  highWaterMark?: number
  /**
   * Bytes queued per stream past which a producer that ignores backpressure (keeps writing
   * after `false`) has its stream aborted, instead of growing memory.
   * @default max(64 × highWaterMark, 8 MiB)
   */
  maxBufferedBytes?: number
  /** Largest request body in bytes (413 past it). @default 1048576 */
  maxBodyBytes?: number
  /** HTTP/1.1 keep-alive. @default true */
  keepAlive?: boolean
  /** Connections the kernel holds until they are accepted (capped by `net.core.somaxconn`). @default 1024 */
  backlog?: number
  /**
   * Put a thrown error's message in the 500 body / `error` event. When false, clients get
   * "Internal Server Error". @default process.env.NODE_ENV !== 'production'
   */
  exposeErrors?: boolean
  /** Called with every error a handler throws (except `HttpError`). @default logs to stderr */
  onError?: (err: unknown, req: RatRequest<unknown>) => void
  /** Limits and timeouts, enforced by the engine before any JS runs. */
  limits?: Limits
}

/** Limits and timeouts (defaults in brackets); each refusal is counted in `metrics()`. */
export interface Limits {
  /** Connections open at once; past it a new connection gets 503 and is closed. @default no limit */
  maxConnections?: number
  /**
   * Streams (SSE, chunked, NDJSON, channel routes) open at once per client IP; past it
   * 429 with `Retry-After`. Off by default: behind a proxy every client shares one address.
   * @default no limit
   */
  maxStreamsPerIp?: number
  /** Take the client IP from the last `X-Forwarded-For` address (only behind a proxy that sets it). @default false */
  trustProxy?: boolean
  /** A request head not complete within this many ms (from its first byte) closes the connection (slowloris). @default 10000 */
  headerTimeoutMs?: number
  /** Longest wait between two reads of a request body, in ms; past it 408. @default 30000 */
  bodyTimeoutMs?: number
  /** How long a keep-alive connection may wait for its next request, in ms. @default 60000 */
  idleTimeoutMs?: number
  /** A plain handler that has not answered in this many ms gets 504 and its `req.signal` aborts; streams are exempt; 0 turns it off. @default 30000 */
  handlerTimeoutMs?: number
  /** Largest request head in bytes; past it 431. @default 16384 */
  maxHeaderBytes?: number
  /** Longest request target (path and query) in bytes; past it 414. @default 8192 */
  maxUrlBytes?: number
}

/** Where to listen. */
export interface ListenOptions {
  /** @default 8080 */
  port?: number
  /** @default '127.0.0.1' */
  host?: string
  /**
   * Serve HTTPS: HTTP/2 and HTTP/1.1 by ALPN, so a browser shares one connection between
   * all its streams to this origin (HTTP/1.1 allows it six). Node's `https` names.
   */
  tls?: TlsOptions
}

/** A certificate and its key, in PEM (Node's `https` names). */
export interface TlsOptions {
  /** The server's certificate, optionally followed by intermediate certificates. */
  cert: string | Buffer
  /** Its private key: PKCS#8, PKCS#1 RSA or SEC1 EC; encrypted PKCS#8 with `passphrase`. */
  key: string | Buffer
  /** The passphrase of an encrypted key. */
  passphrase?: string
  /** Intermediate certificates sent after `cert` (one PEM string or several). */
  ca?: string | Buffer | Array<string | Buffer>
}

function nativeTls(tls: TlsOptions) {
  const ca = tls.ca === undefined ? [] : Array.isArray(tls.ca) ? tls.ca : [tls.ca]
  const pem = (v: string | Buffer) => (typeof v === 'string' ? v : v.toString('latin1'))
  const cert = [tls.cert, ...ca].map((c) => pem(c).trim()).join('\n') + '\n'
  return { cert: Buffer.from(cert, 'latin1'), key: Buffer.from(pem(tls.key), 'latin1'), passphrase: tls.passphrase }
}

/** The bound address. */
export interface AddressInfo {
  host: string
  port: number
}

type Awaitable<T> = T | Promise<T>
type Req<P extends string> = RatRequest<PathParams<P>>

/** A plain handler: its return value becomes the response (see `toWire`). */
export type Handler<P extends string = string> = (req: Req<P>) => unknown
/** An SSE handler: an async generator of events, or a function that uses `stream`. */
export type SseHandler<P extends string = string> = (
  req: Req<P>,
  stream: SseStream,
) => Awaitable<void | Iterable<unknown> | AsyncIterable<unknown>>
/** A chunked handler: a generator of chunks, a `StreamSource`, or a function that uses `stream`. */
export type ChunkedHandler<P extends string = string> = (
  req: Req<P>,
  stream: ChunkedStream,
) => Awaitable<void | Iterable<unknown> | AsyncIterable<unknown> | StreamSource<unknown>>

/** Options of a route. */
export interface RouteOptions {
  /**
   * Hand the request body over as it arrives (`req.stream()`) instead of reading it in
   * full before the handler runs. @default false
   */
  streamBody?: boolean
  /** This route's body limit in bytes, instead of the app's `maxBodyBytes`. */
  bodyLimit?: number
}

/** Options of an SSE, chunked or NDJSON route. */
export interface StreamRouteOptions extends RouteOptions {
  /** @default 'GET' */
  method?: string
  /** Streams of this route open at once; past it 429 with `Retry-After`. @default no limit */
  maxStreams?: number
}
/** Options of a chunked or NDJSON route. */
export interface ChunkedRouteOptions extends StreamRouteOptions {
  /** @default 'text/plain; charset=utf-8' (NDJSON routes: 'application/x-ndjson') */
  contentType?: string
}

type Run = (call: Call) => void
interface Live {
  req: RatRequest<unknown>
  stream: BaseStream
}

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function'

/** An application: routes, channels, and the native engine that serves them. */
export class App {
  readonly #engine: NativeEngine
  readonly #routes: Run[] = []
  readonly #live = new Map<number, Live>()
  /** Plain requests whose handler returned a promise that has not settled: their client may leave. */
  readonly #waiting = new Map<number, RatRequest<unknown>>()
  readonly #channels = new Map<string, Channel>()
  readonly #exposeErrors: boolean
  readonly #onError: (err: unknown, req: RatRequest<unknown>) => void
  #address: AddressInfo | null = null

  constructor(options: AppOptions = {}) {
    this.#exposeErrors = options.exposeErrors ?? process.env.NODE_ENV !== 'production'
    this.#onError =
      options.onError ??
      ((err, req) => console.error(`rat-engine: ${req.method} ${req.path} failed:`, err))
    const { heartbeatMs, highWaterMark, maxBufferedBytes, maxBodyBytes, keepAlive, backlog, limits } = options
    this.#engine = call(
      () =>
        new native.Engine({ heartbeatMs, highWaterMark, maxBufferedBytes, maxBodyBytes, keepAlive, backlog, limits }, (seq, routeIds, ids, closed, ready) =>
          this.#dispatch(seq, routeIds, ids, closed, ready),
        ),
    )
  }

  // The one entry from the engine: a batch of new requests, of streams whose queue has
  // room again, and of closed streams. The engine releases the requests that no handler
  // kept (see `Batch`) when this returns.
  #dispatch(seq: number, routeIds: number[], ids: number[], closed: number[], ready: number[]): void {
    for (let i = 0; i < ready.length; i++) this.#live.get(ready[i])?.stream._ready(true)
    const batch = routeIds.length > 0 ? new Batch(seq) : null
    for (let i = 0; i < routeIds.length; i++) {
      const c = new Call(batch as Batch, i, ids[i])
      try {
        this.#routes[routeIds[i]](c)
      } catch (err) {
        // A route throws only before it has a request object (a stream route detaching).
        this.#fail(c, null, err)
      }
    }
    for (let i = 0; i < closed.length; i++) this.#closed(closed[i])
  }

  #closed(id: number): void {
    const waiting = this.#waiting.get(id)
    if (waiting) {
      this.#waiting.delete(id)
      waiting._abort()
      return
    }
    const live = this.#live.get(id)
    if (!live) return
    this.#live.delete(id)
    live.stream._gone()
    live.req._abort()
    live.stream._closed()
  }

  #add(kind: 'plain' | 'sse' | 'chunked', method: string, path: string, run: Run, contentType?: string, options: StreamRouteOptions = {}): this {
    const id = this.#routes.length
    const { streamBody, bodyLimit, maxStreams } = options
    call(() => this.#engine.addRoute(kind, method, path, id, contentType, { streamBody, bodyLimit, maxStreams }))
    this.#routes.push(run)
    return this
  }

  /**
   * Answers a failed request: an `HttpError` with its status and message (before the head),
   * anything else through `onError` (when there is a request to give it) and a 500,
   * `event: error` or cut stream whose message `exposeErrors` decides. Never throws: it runs
   * in promise callbacks, where a throw would be an unhandled rejection (fatal in Node).
   */
  #fail(c: Call, req: RatRequest<unknown> | null, err: unknown): void {
    try {
      // What the stream collected goes out before the error.
      this.#live.get(c.id)?.stream._flush()
    } catch {
      // The stream fails anyway, with `err`.
    }
    let message = 'Internal Server Error'
    try {
      const e = fromNative(err)
      if (e instanceof HttpError) {
        if (!c.started) {
          try {
            const headers = ['content-type', 'application/json', ...flatHeaders(e.headers)]
            c.respond(e.status, headers, JSON.stringify({ error: e.message, status: e.status }))
            return
          } catch {
            // e.g. an invalid header in the HttpError: a plain failure instead.
          }
        }
        message = String(e.message)
      } else {
        if (req) {
          try {
            this.#onError(e, req)
          } catch {
            // An error hook that throws must not take the server down.
          }
        }
        if (this.#exposeErrors) message = e instanceof Error ? String(e.message) : String(e)
      }
    } catch {
      // A thrown value that cannot be read (a throwing getter, no toString): the generic message.
    }
    try {
      c.fail(message)
    } catch {
      // Already answered, or the client has gone.
    }
  }

  #plain(style: PlainStyle, handler: Handler<string> | string): Run {
    // Never throws (it runs in promise callbacks): a value that cannot be sent fails the request.
    const respond = (c: Call, req: RatRequest<unknown>, value: unknown) => {
      try {
        if (isIterable(value) && !Array.isArray(value)) {
          throw new TypeError('a plain route returned a stream; register it with app.chunked(), app.ndjson() or app.sse()')
        }
        const [status, headers, body] = toWire(value, style)
        if (body instanceof Uint8Array) c.respondBuffer(status, headers, body)
        else c.respond(status, headers, body)
      } catch (err) {
        this.#fail(c, req, err)
      }
    }
    if (typeof handler === 'string') return (c) => respond(c, new RatRequest(c), handler)
    return (c) => {
      const req = new RatRequest(c)
      let out: unknown
      try {
        out = handler(req as never)
        if (isThenable(out)) {
          // Answered later: the request must outlive this dispatch call, and its signal
          // aborts if the client leaves first.
          c.keep()
          this.#waiting.set(c.id, req)
          out.then(
            (v) => {
              this.#waiting.delete(c.id)
              respond(c, req, v)
            },
            (err) => {
              this.#waiting.delete(c.id)
              this.#fail(c, req, err)
            },
          )
          return
        }
      } catch (err) {
        return this.#fail(c, req, err)
      }
      respond(c, req, out)
    }
  }

  #stream(
    make: (c: Call, req: RatRequest<unknown>) => BaseStream,
    handler: (req: never, stream: never) => unknown,
    write: (stream: BaseStream, item: unknown) => boolean,
  ): Run {
    return (batched) => {
      // A stream may live for hours: it keeps its own request, not its whole batch.
      const c = batched.detach()
      const req = new RatRequest(c)
      let stream: BaseStream
      try {
        stream = make(c, req)
      } catch (err) {
        return this.#fail(c, req, err)
      }
      this.#live.set(c.id, { req, stream })
      // Never throws: it runs in a promise callback, where a throw would be an unhandled
      // rejection (fatal in Node).
      const settle = (value: unknown) => {
        try {
          stream._flush()
          if (isIterable(value)) {
            const type = (value as Partial<StreamSource<unknown>>).contentType
            if (typeof type === 'string' && !c.started) c.appendHeader('content-type', type)
            pump(value, stream, (item) => write(stream, item))
              .then(() => stream.end())
              .catch((err: unknown) => this.#fail(c, req, err))
          } else if (!c.closed) {
            stream.start()
          }
        } catch (err) {
          this.#fail(c, req, err)
        }
      }
      let out: unknown
      try {
        out = handler(req as never, stream as never)
        if (isThenable(out)) {
          out.then(settle, (err) => this.#fail(c, req, err))
          return
        }
      } catch (err) {
        return this.#fail(c, req, err)
      }
      settle(out)
    }
  }

  /** A route for any method whose return value is the response. */
  route<P extends string>(method: string, path: P, handler: Handler<P> | string, options?: RouteOptions): this {
    return this.#add('plain', method, path, this.#plain('auto', handler as Handler<string>), undefined, options)
  }

  /** GET (and HEAD): objects are sent as JSON, strings as text, `Reply` as built. */
  get<P extends string>(path: P, handler: Handler<P> | string, options?: RouteOptions): this {
    return this.route('GET', path, handler, options)
  }
  /** POST. */
  post<P extends string>(path: P, handler: Handler<P>, options?: RouteOptions): this {
    return this.route('POST', path, handler, options)
  }
  /** PUT. */
  put<P extends string>(path: P, handler: Handler<P>, options?: RouteOptions): this {
    return this.route('PUT', path, handler, options)
  }
  /** PATCH. */
  patch<P extends string>(path: P, handler: Handler<P>, options?: RouteOptions): this {
    return this.route('PATCH', path, handler, options)
  }
  /** DELETE. */
  delete<P extends string>(path: P, handler: Handler<P>, options?: RouteOptions): this {
    return this.route('DELETE', path, handler, options)
  }

  /** GET returning text (`text/plain`); `handler` may be a constant string. */
  text<P extends string>(path: P, handler: ((req: Req<P>) => Awaitable<string>) | string): this {
    return this.#add('plain', 'GET', path, this.#plain('text', handler as Handler<string>))
  }

  /** GET returning HTML (`text/html`); `handler` may be a constant string. */
  html<P extends string>(path: P, handler: ((req: Req<P>) => Awaitable<string>) | string): this {
    return this.#add('plain', 'GET', path, this.#plain('html', handler as Handler<string>))
  }

  /**
   * An SSE route. `handler` is an async generator of events (strings, values sent as JSON,
   * or `{ event, data, id, retry }`), a function that writes to `stream`, or a `Channel`
   * (every request subscribes to it, resuming from Last-Event-ID, with no JS per request).
   */
  sse<P extends string>(path: P, handler: SseHandler<P> | Channel, options: StreamRouteOptions = {}): this {
    const method = options.method ?? 'GET'
    if (handler instanceof Channel) {
      call(() => this.#engine.addChannelRoute(method, path, handler.native, options.maxStreams))
      return this
    }
    const run = this.#stream(
      (c, req) => new SseStream(c, req),
      handler as never,
      (s, item) => (s as SseStream).send(item),
    )
    return this.#add('sse', method, path, run, undefined, options)
  }

  /** A chunked route: yield (or `stream.write`) strings and bytes; or return a `StreamSource`. */
  chunked<P extends string>(path: P, handler: ChunkedHandler<P>, options: ChunkedRouteOptions = {}): this {
    return this.#chunked(path, handler, options, false)
  }

  /** An NDJSON route (`application/x-ndjson`): yield (or `stream.write`) values, one per line. */
  ndjson<P extends string>(path: P, handler: ChunkedHandler<P>, options: ChunkedRouteOptions = {}): this {
    return this.#chunked(path, handler, { contentType: 'application/x-ndjson', ...options }, true)
  }

  #chunked(path: string, handler: (req: never, stream: never) => unknown, options: ChunkedRouteOptions, ndjson: boolean): this {
    const run = this.#stream(
      (c, req) => new ChunkedStream(c, req, ndjson),
      handler as never,
      (s, item) => (s as ChunkedStream).write(item),
    )
    return this.#add('chunked', options.method ?? 'GET', path, run, options.contentType ?? 'text/plain; charset=utf-8', options)
  }

  /** The seeds' name for `route(method, path, handler)`. */
  registerRoute<P extends string>(method: string, path: P, handler: Handler<P>): this {
    return this.route(method, path, handler)
  }
  /** The seeds' name for `sse(path, handler, { method })`. */
  registerSseRoute<P extends string>(method: string, path: P, handler: SseHandler<P> | Channel): this {
    return this.sse(path, handler, { method })
  }
  /** The seeds' name for `chunked(path, handler, { method })`. */
  registerChunkedRoute<P extends string>(method: string, path: P, handler: ChunkedHandler<P>): this {
    return this.chunked(path, handler, { method })
  }

  /** The channel named `name`, created on first use (later options are ignored). */
  channel(name: string, options?: ChannelOptions): Channel {
    let ch = this.#channels.get(name)
    if (!ch || ch.closed) {
      ch = new Channel(name, options)
      this.#channels.set(name, ch)
    }
    return ch
  }

  /** Removes a channel from this app's registry and closes it (its subscribers' streams end). */
  deleteChannel(name: string): boolean {
    const ch = this.#channels.get(name)
    ch?.close()
    return this.#channels.delete(name)
  }

  /** Binds and serves. Port 0 picks a free port. Resolves to the bound address. */
  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const host = options.host ?? '127.0.0.1'
    const port = options.port ?? 8080
    try {
      this.#address = await this.#engine.listen(host, port, options.tls === undefined ? undefined : nativeTls(options.tls))
    } catch (err) {
      throw fromNative(err)
    }
    return this.#address
  }

  /**
   * Replaces the TLS certificate and key for connections made from now on (open ones keep
   * theirs), without a restart.
   * @throws RatError `ERR_TLS` when the pair cannot be used (the message says why; the
   * certificate in use is kept) or the app is not listening with TLS.
   */
  setCertificate(tls: TlsOptions): void {
    call(() => this.#engine.setCertificate(nativeTls(tls)))
  }

  /** The bound address, or null before `listen`. */
  get address(): AddressInfo | null {
    return this.#address
  }

  /**
   * Stops accepting, lets streams finish for up to `graceMs`, then closes them; resolves
   * when every connection is gone. Afterwards nothing keeps Node alive.
   */
  async close(graceMs = 5000): Promise<void> {
    await this.#engine.close(graceMs)
    for (const id of [...this.#live.keys(), ...this.#waiting.keys()]) this.#closed(id)
    this.#address = null
  }

  /** Server counters. */
  metrics(): EngineMetrics {
    return this.#engine.metrics()
  }

  /** The seeds' name for `metrics()`. */
  getPerformanceMetrics(): EngineMetrics {
    return this.metrics()
  }
}

/** Creates an app. */
export function createApp(options?: AppOptions): App {
  return new App(options)
}
