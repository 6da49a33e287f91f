import { Channel, nativeChannel, newChannel, type ChannelOptions } from './channel.js'
import { newChunkedStream, type ChunkedStream } from './chunked.js'
import { fromNative, HttpError, native as call, RatError } from './errors.js'
import { isIterable, type StreamSource } from './helpers.js'
import { Call } from './call.js'
import { nativeWsOptions, Sockets, type WsHandlers, type WsRouteOptions } from './ws.js'
import type { WsRouteOptions as NativeWsOptions } from './native.js'
import { hooksFor, isUnder, prefixSegments, type Applied, type Hook, type HookEntry } from './hooks.js'
import { native, type AccessLogEntry, type EngineMetrics, type EngineNote, type NativeEngine } from './native.js'
import { prometheusText } from './prometheus.js'
import { pump } from './pump.js'
import { flatHeaders, Reply, toWire, type PlainStyle } from './reply.js'
import { abortRequest, isAborted, newRequest, type RatRequest } from './request.js'
import { newSseStream, type SseStream } from './sse.js'
import { closedNotice, flush, gone, readyNotice, type BaseStream } from './stream.js'
import type { PathParams } from './types.js'

/** Options of `createApp`. */
/** Where channels are shared between processes (see docs/redis.md). */
export interface RedisOptions {
  /** `redis://[user:password@]host[:port][/db]`. */
  url: string
  /** Prepended to a channel's name to make its Redis stream's key. @default 'rat:' */
  keyPrefix?: string
  /** Publishes held while Redis is unreachable; past it `publish` throws `ERR_REDIS`. @default 100000 */
  buffer?: number
  /**
   * Entries each channel's Redis stream keeps at least (more when its history is larger):
   * how far a process may fall behind a burst of publishes without losing events.
   * @default 10000
   */
  streamLen?: number
}

export interface AppOptions {
  /**
   * Share every channel (unless made with `{ redis: false }`) between all processes using
   * this Redis: a publish on any reaches subscribers on all, with ids Redis assigns, so a
   * client resumes with Last-Event-ID on any process. `listen` rejects with `ERR_REDIS`
   * when Redis cannot be reached. A URL string or `{ url, keyPrefix, buffer }`.
   */
  redis?: string | RedisOptions
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
  /**
   * Told about every error a handler or hook throws (except `HttpError`), to log it; the
   * response is shaped by `app.onError`. @default logs to stderr
   */
  onError?: (err: unknown, req: RatRequest<unknown>) => void
  /**
   * Where the app logs: any object with pino's methods (pino itself, or `console`-like
   * adapters). Handler errors go to `logger.error` (unless `onError` is given), and one
   * access log entry per request to `logger.info` (see `accessLog`).
   */
  logger?: Logger
  /**
   * One entry per request once its response is over (a stream when it ends), to
   * `logger.info`: `{ method, path, status, ms, bytes, remoteAddress, userAgent }` and the
   * message `'request'`. Made by the engine, so channel routes and engine-made answers
   * (404, 429...) are logged too. @default true when `logger` is given
   */
  accessLog?: boolean
  /** Limits and timeouts, enforced by the engine before any JS runs. */
  limits?: Limits
  /** CORS for every route (a route may override it with its own `cors` option). */
  cors?: CorsOptions
  /**
   * Response compression, negotiated by `Accept-Encoding` and done by the engine: plain
   * responses of 1 KiB and more, and streams (SSE, chunked, NDJSON), flushed at every event
   * or write so each decodes on arrival. `true` for the defaults. A route may opt out with
   * `compression: false`. @default off
   */
  compression?: boolean | CompressionOptions
  /**
   * Static credentials the engine checks before any handler (channel routes included, with
   * no JS): under `prefix`, a request needs `Authorization: Bearer <one of bearer>` or
   * `<header>: <one of apiKeys>`, else 401 with `WWW-Authenticate: Bearer`.
   */
  auth?: AuthRule[]
}

/** What the app logs to: pino's method shapes (`info(obj, msg)` ...). */
export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  debug?(obj: object, msg?: string): void
}

/** Credentials required under a path prefix (whole segments: `/api` covers `/api/x`, not `/apix`). */
export interface AuthRule {
  prefix: string
  bearer?: string[]
  apiKeys?: string[]
  /** The header that carries an API key. @default 'x-api-key' */
  header?: string
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
  /**
   * Age in ms at which a stream (SSE, chunked, channel) ends cleanly after what it queued:
   * an EventSource reconnects and resumes from Last-Event-ID, so long-lived connections
   * spread again over servers added meanwhile. @default no limit
   */
  maxStreamAgeMs?: number
  /** Largest request head in bytes; past it 431. @default 16384 */
  maxHeaderBytes?: number
  /** Longest request target (path and query) in bytes; past it 414. @default 8192 */
  maxUrlBytes?: number
}

/** The error response the app sends unless `app.onError` returns a `Reply`. */
export interface ErrorResponse {
  /** The `HttpError`'s status, else 500. */
  status: number
  /** The message of the default body: an `HttpError`'s, else what `exposeErrors` allows. */
  message: string
}

/**
 * Shapes the response to an error thrown before the response started: a `Reply` is sent
 * instead of the default `{ error, status }` JSON; nothing keeps the default. Synchronous.
 */
export type ErrorHandler = (err: unknown, req: RatRequest<unknown>, res: ErrorResponse) => Reply | void

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
  /**
   * Bind with `SO_REUSEPORT` (Linux, BSDs, macOS), so that several processes (node:cluster
   * workers, or separate servers) listen on the same port and the kernel spreads
   * connections between them. Every process on the port must pass it.
   * @default false
   */
  reusePort?: boolean
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
/** An SSE handler: a generator of events (data, or `sseEvent(...)`), or a function that uses `stream`. */
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
  /** This route's CORS instead of the app's, or `false` for none. */
  cors?: CorsOptions | false
  /** `false`: never compress this route's responses. @default as the app says */
  compression?: false
}

/** How the engine compresses responses (see `AppOptions.compression`). */
export interface CompressionOptions {
  /** Codings offered, in the server's order of preference. @default ['zstd', 'br', 'gzip'] */
  encodings?: Array<'zstd' | 'br' | 'gzip'>
  /** Plain responses under this many bytes are sent as they are. @default 1024 */
  threshold?: number
  /** Level in each coding's own scale (gzip 0-9, br 0-11, zstd 1-22). @default gzip 6, br 4, zstd 3 */
  level?: number
}

/**
 * CORS, answered by the engine: preflights get a 204 without running a handler, and every
 * response to an allowed origin, streams included, carries the CORS headers and
 * `Vary: Origin`; other origins get none.
 */
export interface CorsOptions {
  /**
   * Allowed origins: `'*'` (or `true`) for any, an exact origin (`'https://app.example'`),
   * a RegExp an origin must match in full (its `i` flag is kept), a function, or a list of
   * these. A function decides the origins the strings and RegExps do not allow; it is
   * called once per distinct origin (the engine remembers up to 1,024 answers), may be
   * async, and an origin it throws on is refused.
   */
  origin: CorsOrigin | CorsOrigin[]
  /** Allow cookies and authorization (the origin is then named, never `*`). @default false */
  credentials?: boolean
  /** Methods a preflight allows. @default the route's methods */
  methods?: string[]
  /** Request headers a preflight allows. @default those it asks for */
  allowedHeaders?: string[]
  /** Response headers the page may read besides the safelisted ones. */
  exposedHeaders?: string[]
  /** Seconds a browser may cache a preflight's answer. */
  maxAge?: number
}

/** One allowed origin, a pattern, or a function deciding (see `CorsOptions.origin`). */
export type CorsOrigin = true | string | RegExp | ((origin: string) => boolean | Promise<boolean>)

/** `c` for the engine; an origin function is added to `checks` and named by its index. */
function nativeCors(c: CorsOptions, checks: Array<(origin: string) => unknown>) {
  const list = Array.isArray(c.origin) ? c.origin : [c.origin]
  const origins: string[] = []
  const patterns: string[] = []
  let check: number | undefined
  for (const o of list) {
    if (o === true || o === '*') origins.push('*')
    else if (typeof o === 'string') origins.push(o)
    else if (o instanceof RegExp) patterns.push(o.flags.includes('i') ? `(?i)${o.source}` : o.source)
    else if (typeof o === 'function' && check === undefined) check = checks.push(o) - 1
    else throw new RatError('ERR_INVALID_ARGUMENT', `invalid CORS origin ${String(o)}: use '*', a string, a RegExp, one function or a list of them`)
  }
  const { credentials, methods, allowedHeaders, exposedHeaders, maxAge } = c
  return { origins, patterns, credentials, methods, allowedHeaders, exposedHeaders, maxAge, check }
}

function nativeRouteOptions(o: StreamRouteOptions, checks: Array<(origin: string) => unknown>) {
  const { streamBody, bodyLimit, maxStreams, cors, compression } = o
  return {
    streamBody,
    bodyLimit,
    maxStreams,
    cors: cors ? nativeCors(cors, checks) : undefined,
    corsOff: cors === false,
    compressionOff: compression === false,
  }
}

function nativeCompression(c: boolean | CompressionOptions | undefined) {
  if (c === undefined || c === false) return undefined
  if (c === true) return {}
  if (typeof c !== 'object' || c === null) {
    throw new RatError('ERR_INVALID_ARGUMENT', `invalid compression option ${String(c)}: use true, false or an object`)
  }
  const { encodings, threshold, level } = c
  return { encodings, threshold, level }
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
/** Makes a route's run: without hooks (`null`) or running `hooks` before its handler. */
type Build = (hooks: readonly Applied[] | null) => Run
/** Where a route goes once its hooks have let the request through. */
type Go<S> = (c: Call, req: RatRequest<unknown>, s: S) => void
/** A route served by JS: its pattern, to know which hooks apply. */
interface JsRoute {
  id: number
  path: string
  build: Build
  /** A WebSocket route with no `open`: its tag and options, for the engine to accept its upgrades without JS while no hook applies. */
  unasked?: { tag: number; ws: NativeWsOptions }
}
/** A channel route, registered with the engine at `listen()` (served by JS if hooks apply). */
interface ChannelRoute {
  method: string
  path: string
  channel: Channel
  options: StreamRouteOptions
  /** A WebSocket channel route's settings (else an SSE route). */
  ws?: NativeWsOptions
}
interface Live {
  req: RatRequest<unknown>
  stream: BaseStream
}

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function'

/** Answers with a `Reply`; throws when it cannot be sent (an invalid header, a started response). */
function respondWith(c: Call, value: Reply): void {
  const [status, headers, body] = toWire(value, 'auto')
  if (body instanceof Uint8Array) c.respondBuffer(status, headers, body)
  else c.respond(status, headers, body)
}

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
  #errorHandler: ErrorHandler | null = null
  readonly #logger: Logger | null
  /** CORS origin functions, by the index the engine asks with. */
  readonly #originChecks: Array<(origin: string) => unknown> = []
  readonly #hooks: HookEntry[] = []
  readonly #jsRoutes: JsRoute[] = []
  readonly #channelRoutes: ChannelRoute[] = []
  readonly #sockets = new Sockets(
    (err, msg) => this.#logError(err, msg),
    (id) => this.#engine.takeWs(id),
  )
  /** Hooks resolved and channel routes registered (at `listen()`): no more hooks. */
  #resolved = false
  #address: AddressInfo | null = null

  constructor(options: AppOptions = {}) {
    this.#exposeErrors = options.exposeErrors ?? process.env.NODE_ENV !== 'production'
    const logger = options.logger
    this.#logger = logger ?? null
    this.#onError =
      options.onError ??
      (logger
        ? (err, req) => logger.error({ err, method: req.method, path: req.path }, 'handler failed')
        : (err, req) => console.error(`rat-engine: ${req.method} ${req.path} failed:`, err))
    const { heartbeatMs, highWaterMark, maxBufferedBytes, maxBodyBytes, keepAlive, backlog, limits, auth } = options
    const cors = options.cors === undefined ? undefined : nativeCors(options.cors, this.#originChecks)
    const compression = nativeCompression(options.compression)
    const accessLog = logger !== undefined && options.accessLog !== false
    const redis = typeof options.redis === 'string' ? { url: options.redis } : options.redis
    this.#engine = call(
      () =>
        new native.Engine(
          { heartbeatMs, highWaterMark, maxBufferedBytes, maxBodyBytes, keepAlive, backlog, limits, cors, compression, auth, accessLog, warnings: logger !== undefined, redis },
          (seq, routeIds, ids, closed, ready, logs, notes, ws) => this.#dispatch(seq, routeIds, ids, closed, ready, logs, notes, ws),
        ),
    )
  }

  // The one entry from the engine: a batch of new requests, of streams whose queue has
  // room again, and of closed streams. The engine releases the requests that no handler
  // kept (see `Call`) when this returns.
  #dispatch(seq: number, routeIds: number[], ids: number[], closed: number[], ready: number[], logs: AccessLogEntry[], notes: EngineNote[], ws: Array<number | string | Buffer>): void {
    if (logs.length > 0) this.#accessLog(logs)
    for (let i = 0; i < notes.length; i++) this.#note(notes[i])
    for (let i = 0; i < ready.length; i++) {
      const live = this.#live.get(ready[i])
      if (live) readyNotice(live.stream, true)
    }
    for (let i = 0; i < routeIds.length; i++) {
      const c = new Call(seq, i, ids[i])
      try {
        this.#routes[routeIds[i]](c)
      } catch (err) {
        // Routes answer their own errors; this is the net under them.
        this.#fail(c, newRequest(c), err)
      }
    }
    if (ws.length > 0) this.#sockets.events(ws)
    for (let i = 0; i < closed.length; i++) this.#closed(closed[i])
  }

  // An engine warning for the logger, or an origin for a CORS function to decide.
  #note(n: EngineNote): void {
    if (n.kind === 'origin') {
      const token = n.token!
      const decide = (ok: boolean) => {
        try {
          this.#engine.originDecided(token, ok)
        } catch {
          // The engine has closed: nobody waits for the answer.
        }
      }
      const check = this.#originChecks[n.check!]
      try {
        Promise.resolve(check(n.origin!)).then(
          (ok) => decide(ok === true),
          (err) => {
            this.#logError(err, 'CORS origin function failed')
            decide(false)
          },
        )
      } catch (err) {
        this.#logError(err, 'CORS origin function failed')
        decide(false)
      }
      return
    }
    this.#toLogger('warn', { kind: n.warning, remoteAddress: n.remoteAddress ?? undefined, path: n.path ?? undefined, dropped: n.dropped ?? undefined }, n.message ?? n.warning ?? 'warning')
  }

  #logError(err: unknown, msg: string): void {
    if (!this.#toLogger('error', { err }, msg)) console.error(`rat-engine: ${msg}:`, err)
  }

  /** Calls `logger[level]` (false without a logger); a logger that throws must not take the server down. */
  #toLogger(level: 'info' | 'warn' | 'error', obj: object, msg: string): boolean {
    const logger = this.#logger
    if (!logger) return false
    try {
      logger[level](obj, msg)
    } catch {
      // Nothing to do: the log line is lost, the server goes on.
    }
    return true
  }

  #accessLog(entries: AccessLogEntry[]): void {
    for (const e of entries) if (!this.#toLogger('info', e, 'request')) return
  }

  #closed(id: number): void {
    this.#sockets.abandoned(id)
    const waiting = this.#waiting.get(id)
    if (waiting) {
      this.#waiting.delete(id)
      abortRequest(waiting)
      return
    }
    const live = this.#live.get(id)
    if (!live) return
    this.#live.delete(id)
    gone(live.stream)
    abortRequest(live.req)
    closedNotice(live.stream)
  }

  #add(kind: 'plain' | 'sse' | 'chunked' | 'ws', method: string, path: string, build: Build, contentType?: string, options: StreamRouteOptions = {}, unasked?: JsRoute['unasked']): this {
    const id = this.#routes.length
    call(() => this.#engine.addRoute(kind, method, path, id, contentType, nativeRouteOptions(options, this.#originChecks)))
    this.#routes.push(build(null))
    const route: JsRoute = { id, path, build, unasked }
    this.#jsRoutes.push(route)
    if (this.#resolved) this.#unasked(route, null)
    return this
  }

  /** Has the engine accept a WebSocket route's upgrades itself while no hook applies to it (its sockets reach JS at their first event). */
  #unasked(r: JsRoute, hooks: readonly Applied[] | null): void {
    if (r.unasked) call(() => this.#engine.acceptWsUnasked(r.id, hooks === null ? r.unasked!.ws : null, r.unasked!.tag))
  }

  /**
   * Gives every JS route the hooks that apply to it, and registers the channel routes: with
   * the engine's channel handler when no hook applies (no JS per request), else as a JS SSE
   * route that runs the hooks, then subscribes. Called by `listen()`; a route that fails to
   * register stays pending, so a second `listen()` fails the same way.
   */
  #resolve(): void {
    while (this.#channelRoutes.length > 0) {
      const { method, path, channel, options, ws } = this.#channelRoutes[0]
      const hooked = hooksFor(path, this.#hooks).length > 0
      if (ws && !hooked) {
        call(() => this.#engine.addWsChannelRoute(path, nativeChannel(channel), ws, nativeRouteOptions(options, this.#originChecks)))
      } else if (ws) {
        this.#add('ws', 'GET', path, this.#wsRun({ open: (s) => s.subscribe(channel) }, ws, null), undefined, options)
      } else if (!hooked) {
        call(() => this.#engine.addChannelRoute(method, path, nativeChannel(channel), nativeRouteOptions(options, this.#originChecks)))
      } else {
        const subscribe = (_req: RatRequest<unknown>, stream: SseStream) => void stream.subscribe(channel)
        this.#add('sse', method, path, this.#sseRun(subscribe), undefined, options)
      }
      this.#channelRoutes.shift()
    }
    for (const r of this.#jsRoutes) {
      const hooks = hooksFor(r.path, this.#hooks)
      this.#routes[r.id] = r.build(hooks.length === 0 ? null : hooks)
      this.#unasked(r, hooks.length === 0 ? null : hooks)
    }
    this.#resolved = true
  }

  /**
   * Runs `hooks` from the `i`th in order, then `go`. Synchronous as long as the hooks are;
   * a hook's promise continues the chain when it settles (a plain request is then kept, as
   * for an async handler). A hook that returns a `Reply` or throws answers the request.
   * Never throws.
   */
  #guard<S>(c: Call, req: RatRequest<unknown>, hooks: readonly Applied[], i: number, go: Go<S>, s: S, plain: boolean): void {
    let path: string | undefined
    for (; i < hooks.length; i++) {
      const { hook, under } = hooks[i]
      let out: unknown
      try {
        if (under !== null && !isUnder((path ??= req.path), under)) continue
        out = hook(req as RatRequest)
        if (out === undefined || out === null) continue
        if (isThenable(out)) {
          if (plain) {
            c.keep()
            this.#waiting.set(c.id, req)
          }
          const next = i + 1
          out.then(
            (v) => {
              if (plain) this.#waiting.delete(c.id)
              if (isAborted(req)) return // the client has gone
              if (v === undefined || v === null) this.#guard(c, req, hooks, next, go, s, plain)
              else this.#refuse(c, req, v)
            },
            (err) => {
              if (plain) this.#waiting.delete(c.id)
              this.#fail(c, req, err)
            },
          )
          return
        }
      } catch (err) {
        return this.#fail(c, req, err)
      }
      return this.#refuse(c, req, out)
    }
    go(c, req, s)
  }

  /** A hook returned `value` (not nothing): a `Reply` answers the request. Never throws. */
  #refuse(c: Call, req: RatRequest<unknown>, value: unknown): void {
    if (value instanceof Reply) this.#send(c, req, value)
    else this.#fail(c, req, new TypeError(`a hook returns nothing (go on) or a Reply (answer with it), not ${typeof value}`))
  }

  /** Sends a `Reply`; one that cannot be sent fails the request. Never throws. */
  #send(c: Call, req: RatRequest<unknown>, value: Reply): void {
    try {
      respondWith(c, value)
    } catch (err) {
      this.#fail(c, req, err)
    }
  }

  /**
   * Answers a failed request. Before the head: what `app.onError` returns, else an
   * `HttpError`'s status, message and headers, else a 500 whose message `exposeErrors`
   * decides; after it, an `event: error` or a cut stream. Errors other than `HttpError` go
   * to the `onError` option first. Every failure of a request comes here (the engine's
   * error body is the one JSON error shape). Never throws: it runs in promise callbacks,
   * where a throw would be an unhandled rejection (fatal in Node).
   */
  #fail(c: Call, req: RatRequest<unknown>, err: unknown): void {
    try {
      // What the stream collected goes out before the error.
      const live = this.#live.get(c.id)
      if (live) flush(live.stream)
    } catch {
      // The stream fails anyway, with `err`.
    }
    let e = err
    let httpError: HttpError | null = null
    let message = 'Internal Server Error'
    try {
      e = fromNative(err)
      if (e instanceof HttpError) {
        httpError = e
        message = String(e.message)
      } else {
        this.#log(e, req)
        if (this.#exposeErrors) message = e instanceof Error ? String(e.message) : String(e)
      }
    } catch {
      // A thrown value that cannot be read (a throwing getter, no toString): the generic message.
    }
    try {
      if ((httpError || this.#errorHandler) && !c.started) {
        const status = httpError ? httpError.status : 500
        const shaped = this.#shape(e, req, { status, message })
        if (shaped) {
          try {
            respondWith(c, shaped)
            if (!httpError) this.#engine.recordHandlerError()
            return
          } catch (sendErr) {
            // An invalid reply (a bad header): the default response, and the reason logged.
            this.#log(sendErr, req)
          }
        }
        if (httpError) {
          try {
            c.respondError(status, message, flatHeaders(httpError.headers))
            return
          } catch {
            // e.g. an invalid header in the HttpError: a plain failure instead.
          }
        }
      }
    } catch {
      // Already answered, or the client has gone: `fail` below does nothing harmful.
    }
    try {
      c.fail(message)
    } catch {
      // Already answered, or the client has gone.
    }
  }

  /** The `onError` option; one that throws must not take the server down. */
  #log(err: unknown, req: RatRequest<unknown>): void {
    try {
      this.#onError(err, req)
    } catch {
      // Nothing more to do.
    }
  }

  /** What `app.onError` returns for this error, when it is a `Reply`. Never throws. */
  #shape(err: unknown, req: RatRequest<unknown>, res: ErrorResponse): Reply | undefined {
    const handler = this.#errorHandler
    if (!handler) return undefined
    let out: unknown
    try {
      out = handler(err, req, res)
    } catch (handlerErr) {
      this.#log(handlerErr, req)
      return undefined
    }
    if (isThenable(out)) {
      out.then(undefined, () => {})
      this.#log(new TypeError('app.onError returned a promise: it must return a Reply or nothing, synchronously'), req)
      return undefined
    }
    return out instanceof Reply ? out : undefined
  }

  #plain(style: PlainStyle, handler: Handler<string> | string): Build {
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
    if (typeof handler === 'string') {
      const constant: Go<undefined> = (c, req) => respond(c, req, handler)
      return (hooks) =>
        hooks === null
          ? (c) => respond(c, newRequest(c), handler)
          : (c) => this.#guard(c, newRequest(c), hooks, 0, constant, undefined, true)
    }
    const serve: Go<undefined> = (c, req) => {
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
    return (hooks) =>
      hooks === null
        ? (c) => serve(c, newRequest(c), undefined)
        : (c) => this.#guard(c, newRequest(c), hooks, 0, serve, undefined, true)
  }

  #stream(
    make: (c: Call, req: RatRequest<unknown>, fail: (err: unknown) => void) => BaseStream,
    handler: (req: never, stream: never) => unknown,
    write: (stream: BaseStream, item: unknown) => boolean,
  ): Build {
    // The stream's head goes out only when the handler writes or returns, so hooks that
    // refuse (run before `serve`) answer with a plain error response.
    const serve: Go<BaseStream> = (c, req, stream) => {
      // Never throws: it runs in a promise callback, where a throw would be an unhandled
      // rejection (fatal in Node).
      const settle = (value: unknown) => {
        try {
          flush(stream)
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
    return (hooks) => (c) => {
      // A stream outlives the dispatch call: it keeps its request (only its own).
      try {
        c.keep()
      } catch (err) {
        return this.#fail(c, newRequest(c), err)
      }
      const req = newRequest(c)
      let stream: BaseStream
      try {
        stream = make(c, req, (err) => this.#fail(c, req, err))
      } catch (err) {
        return this.#fail(c, req, err)
      }
      this.#live.set(c.id, { req, stream })
      if (hooks === null) serve(c, req, stream)
      else this.#guard(c, req, hooks, 0, serve, stream, false)
    }
  }

  #sseRun(handler: (req: never, stream: never) => unknown): Build {
    return this.#stream(
      newSseStream,
      handler,
      (s, item) => (s as SseStream).send(item),
    )
  }

  /** `tag`: the route's lazy-socket tag (`Sockets.lazyTag`), null for a route with `open`. */
  #wsRun(handlers: WsHandlers<string, unknown>, options: NativeWsOptions, tag: number | null): Build {
    const accept: Go<undefined> = (c, req) => {
      let socket
      try {
        if (tag !== null) return void c.acceptWsLazy(options, tag)
        socket = c.acceptWs(options)
      } catch (err) {
        return this.#fail(c, req, err)
      }
      if (socket !== null) this.#sockets.opened(c.id, socket, handlers, req)
    }
    return (hooks) =>
      hooks === null
        ? (c) => accept(c, newRequest(c), undefined)
        : (c) => this.#guard(c, newRequest(c), hooks, 0, accept, undefined, true)
  }

  /**
   * A WebSocket route (GET with `Upgrade: websocket`). Hooks and path params apply before
   * the upgrade; a hook that answers refuses it. `handler` is the socket's functions, or a
   * `Channel` whose events each socket receives as text frames (each event's data), served
   * by the engine with no JS per socket unless hooks apply.
   */
  ws<P extends string, D = unknown>(path: P, handler: WsHandlers<P, D> | Channel, options: WsRouteOptions & Omit<RouteOptions, 'compression'> = {}): this {
    const ws = nativeWsOptions(options)
    // `compression` is the socket's (permessage-deflate), not the HTTP response's.
    const { compression: _, ...routeOptions } = options
    if (handler instanceof Channel) {
      const route: ChannelRoute = { method: 'GET', path, channel: handler, options: routeOptions, ws }
      if (this.#resolved) {
        this.#channelRoutes.push(route)
        this.#resolve()
      } else this.#channelRoutes.push(route)
      return this
    }
    const handlers = handler as WsHandlers<string, unknown>
    // A socket's chosen subprotocol reaches JS with the upgrade: no lazy accept then.
    const tag = options.protocols?.length ? null : this.#sockets.lazyTag(handlers)
    const unasked = tag === null ? undefined : { tag, ws }
    return this.#add('ws', 'GET', path, this.#wsRun(handlers, ws, tag), undefined, routeOptions, unasked)
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
   * An SSE route. `handler` is an async generator of events (a string is data as is, an
   * `sseEvent(data, { event, id, retry })` an event with fields, any other value, plain
   * objects included, JSON data), a function that writes to `stream`, or a `Channel`
   * (every request subscribes to it, resuming from Last-Event-ID, with no JS per request
   * unless hooks apply to it). A channel route is registered with the engine at `listen()`,
   * which reports its errors (a bad or duplicate pattern).
   */
  sse<P extends string>(path: P, handler: SseHandler<P> | Channel, options: StreamRouteOptions = {}): this {
    const method = options.method ?? 'GET'
    if (handler instanceof Channel) {
      // After listen() the engine refuses it, with the error routes get.
      if (this.#resolved) call(() => this.#engine.addChannelRoute(method, path, nativeChannel(handler), nativeRouteOptions(options, this.#originChecks)))
      else this.#channelRoutes.push({ method, path, channel: handler, options })
      return this
    }
    return this.#add('sse', method, path, this.#sseRun(handler as never), undefined, options)
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
      (c, req, fail) => newChunkedStream(c, req, ndjson, fail),
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
      ch = newChannel(name, options, this.#engine)
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

  /**
   * Adds a hook run before the handler of every route (stream and channel routes included),
   * or of the routes under `prefix` (segment by segment: `/api` covers `/api` and `/api/x`,
   * not `/apix`), before any byte of the response. Hooks run in the order they were added,
   * whether their routes were added before or after them. A hook returns nothing to go on,
   * or a `Reply` to answer with it; it throws `HttpError` to refuse with that status; it
   * may be async, and may set `req.locals` for the handler. Hooks are fixed at `listen()`.
   */
  use(hook: Hook): this
  use(prefix: string, hook: Hook): this
  use(prefixOrHook: string | Hook, maybeHook?: Hook): this {
    if (this.#resolved) throw new RatError('ERR_INVALID_ARGUMENT', 'hooks must be added before listen()')
    const [prefix, hook] = typeof prefixOrHook === 'string' ? [prefixSegments(prefixOrHook), maybeHook] : [null, prefixOrHook]
    if (typeof hook !== 'function') throw new RatError('ERR_INVALID_ARGUMENT', `app.use needs a hook function, not ${typeof hook}`)
    this.#hooks.push({ hook, prefix })
    return this
  }

  /**
   * Shapes error responses: `handler(err, req, { status, message })` is called for every
   * error thrown (by a handler or hook, `HttpError` included) before the response started,
   * and a `Reply` it returns is sent instead of the default `{ error, status }` JSON.
   * Returning nothing, or throwing, keeps the default. A later call replaces the handler.
   * The `onError` option of `createApp` still receives errors (not `HttpError`) to log them.
   */
  onError(handler: ErrorHandler): this {
    if (typeof handler !== 'function') throw new RatError('ERR_INVALID_ARGUMENT', `app.onError needs a function, not ${typeof handler}`)
    this.#errorHandler = handler
    return this
  }

  /** Binds and serves. Port 0 picks a free port. Resolves to the bound address. */
  async listen(options: ListenOptions = {}): Promise<AddressInfo> {
    const host = options.host ?? '127.0.0.1'
    const port = options.port ?? 8080
    this.#resolve()
    try {
      const tls = options.tls === undefined ? undefined : nativeTls(options.tls)
      this.#address = await this.#engine.listen(host, port, tls, options.reusePort === true)
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

  /**
   * The engine's counters and those of every channel in `app.channel()`'s registry (label
   * `channel`), in the Prometheus text format 0.0.4; serve it with content type
   * `text/plain; version=0.0.4`.
   */
  metricsText(): string {
    const channels = [...this.#channels].map(([name, ch]) => [name, ch.metrics()] as const)
    return prometheusText(this.metrics(), channels)
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
