import { nativeChannel, type Channel } from './channel.js'
import { fromNative, RatError } from './errors.js'
import type { WsRouteOptions as NativeWsOptions, WsSocket } from './native.js'
import type { RatRequest } from './request.js'
import type { PathParams } from './types.js'

/** Options of a WebSocket route. */
export interface WsRouteOptions {
  /** Largest message in bytes; past it the socket is closed with 1009. @default 16777216 */
  maxPayload?: number
  /** Close (1001) a socket that has received nothing for this long; 0: never. @default 120000 */
  idleTimeoutMs?: number
  /** Bytes queued at which `ws.send` returns false. @default 65536 */
  highWaterMark?: number
  /** Bytes queued past which the socket is cut (a client that never reads). @default max(64 × highWaterMark, 8 MiB) */
  maxBufferedBytes?: number
  /**
   * Accept permessage-deflate (RFC 7692) when the client offers it (browsers and the `ws`
   * client do): messages of 64 bytes or more go out compressed when that shrinks them (a
   * channel's events compressed once for all its sockets), compressed messages are read.
   * Clients are asked to compress each message on its own (`client_no_context_takeover`),
   * so a socket keeps no inflater; `{ clientContextTakeover: true }` lets them keep their
   * context (better ratios for similar messages, a 32 KiB window per socket).
   * @default false
   */
  compression?: boolean | { clientContextTakeover?: boolean }
  /**
   * Subprotocols the route speaks (`Sec-WebSocket-Protocol`, e.g. `graphql-transport-ws`):
   * the first the client offers that is listed here is chosen, answered, and read as
   * `ws.protocol`; none is answered when none matches. A route with subprotocols gets a
   * JS object per socket from the upgrade on, as a route with `open` does.
   */
  protocols?: string[]
}

/** What a WebSocket route does with its sockets (every function optional). */
export interface WsHandlers<P extends string = string, D = unknown> {
  /** The upgrade is accepted (after the hooks); what it sends goes out right after the 101. */
  open?(ws: RatWebSocket<D>, req: RatRequest<PathParams<P>>): unknown
  /** A message: a string for text, a Buffer for binary. */
  message?(ws: RatWebSocket<D>, data: string | Buffer, isBinary: boolean): unknown
  /** The send queue emptied after a `send` returned false. */
  drain?(ws: RatWebSocket<D>): unknown
  /** The socket ended: the close code (1005 none given, 1006 no close frame) and reason. */
  close?(ws: RatWebSocket<D>, code: number, reason: string): unknown
}

const KEY = Symbol('RatWebSocket')
/** The route's handlers, kept on the socket (one object per socket). */
const HANDLERS: unique symbol = Symbol('handlers')

/** One WebSocket of a route made with `app.ws()`. */
export class RatWebSocket<D = unknown> {
  /** Yours: state kept with the socket. */
  data: D = undefined as D
  readonly #native: WsSocket
  /** @internal */
  readonly [HANDLERS]: WsHandlers<string, unknown>

  /** @internal */
  constructor(key: symbol, socket: WsSocket, handlers: WsHandlers<string, unknown>) {
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'a RatWebSocket is made by the engine')
    this.#native = socket
    this[HANDLERS] = handlers
  }

  /** The client's IP address. */
  get remoteAddress(): string | null {
    return this.#native.remoteAddress()
  }

  /** The subprotocol chosen from the client's offer (`protocols`); `''` when none. */
  get protocol(): string {
    return this.#native.protocol ?? ''
  }

  /**
   * Queues a message: a string as text (or as binary with `isBinary`), bytes as binary.
   * Returns false once the queued bytes reach the high-water mark (wait for `drain`), or
   * when the socket is closing or closed.
   */
  send(data: string | Uint8Array, isBinary?: boolean): boolean {
    try {
      if (typeof data === 'string') {
        return isBinary === true ? this.#native.sendBinary(Buffer.from(data)) : this.#native.sendText(data)
      }
      if (isBinary === false) return this.#native.sendText(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'))
      return this.#native.sendBinary(data)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Closes with `code` (default 1000) and `reason` after what is queued. */
  close(code?: number, reason?: string): void {
    try {
      this.#native.close(code, reason)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Closes normally (1000) after what is queued. */
  end(): void {
    this.#native.end()
  }

  /** Delivers the channel's events to this socket as text frames (each event's data). */
  subscribe(channel: Channel): void {
    this.#native.subscribe(nativeChannel(channel))
  }

  /** Stops delivering the channel's events. */
  unsubscribe(channel: Channel): void {
    this.#native.unsubscribe(nativeChannel(channel))
  }

  /** Bytes queued and not yet written to the socket. */
  get bufferedAmount(): number {
    return this.#native.buffered()
  }

  /** True once the socket is closing or closed. */
  get closed(): boolean {
    return this.#native.closed()
  }
}

/** The native form of route options. */
export function nativeWsOptions(o: WsRouteOptions): NativeWsOptions {
  const { maxPayload, idleTimeoutMs, highWaterMark, maxBufferedBytes, compression: c, protocols } = o
  if (protocols !== undefined && (!Array.isArray(protocols) || !protocols.every((p) => typeof p === 'string' && TOKEN.test(p)))) {
    throw new RatError('ERR_INVALID_ARGUMENT', `protocols must be an array of tokens (e.g. ['graphql-transport-ws']), not ${JSON.stringify(protocols)}`)
  }
  const base = { maxPayload, idleTimeoutMs, highWaterMark, maxBufferedBytes, protocols }
  if (c === undefined || typeof c === 'boolean') return { ...base, compression: c }
  if (c === null || typeof c !== 'object' || !['undefined', 'boolean'].includes(typeof c.clientContextTakeover)) {
    throw new RatError('ERR_INVALID_ARGUMENT', `compression must be true, false or { clientContextTakeover: boolean }, not ${String(c)}`)
  }
  return { ...base, compression: true, clientContextTakeover: c.clientContextTakeover }
}

/** An HTTP token (RFC 9110 §5.6.2): what a subprotocol's name is. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function'

/**
 * The app's open sockets, by the id of the request each upgraded: socket events from the
 * engine's dispatch batches go to their route's handlers. A route with no `open` handler
 * accepts its sockets lazily: the engine keeps each one with the route's tag until its
 * first event, when `take` hands it over, so an idle socket has no JS object. A handler
 * that throws (or whose promise rejects) closes its socket with 1011 and is logged. @internal
 */
export class Sockets {
  readonly #open = new Map<number, RatWebSocket<unknown>>()
  /** The handlers of the routes whose sockets are accepted lazily, by tag. */
  readonly #routes: Array<WsHandlers<string, unknown>> = []
  readonly #logError: (err: unknown, msg: string) => void
  readonly #take: (id: number) => WsSocket | null

  constructor(logError: (err: unknown, msg: string) => void, take: (id: number) => WsSocket | null) {
    this.#logError = logError
    this.#take = take
  }

  /** The tag of a route whose sockets are accepted lazily (it has no `open`), else null. */
  lazyTag(handlers: WsHandlers<string, unknown>): number | null {
    if (handlers.open) return null
    return this.#routes.push(handlers) - 1
  }

  /** A socket accepted for request `id`: runs `open`. */
  opened(id: number, socket: WsSocket, handlers: WsHandlers<string, unknown>, req: RatRequest<unknown>): void {
    const ws = new RatWebSocket<unknown>(KEY, socket, handlers)
    this.#open.set(id, ws)
    if (handlers.open) this.#run(ws, () => handlers.open!(ws, req as never))
  }

  /** The socket of request `id`: open, or accepted lazily and taken now. */
  #get(id: number): RatWebSocket<unknown> | undefined {
    const ws = this.#open.get(id)
    if (ws) return ws
    const socket = this.#take(id)
    if (socket === null) return undefined
    const taken = new RatWebSocket<unknown>(KEY, socket, this.#routes[socket.tag])
    this.#open.set(id, taken)
    return taken
  }

  /**
   * The events of one dispatch batch, in order, three values each: the socket's id; 0
   * text, 1 binary, 2 drain, else the close code; the message, 0, or the close reason.
   */
  events(events: Array<number | string | Buffer>): void {
    for (let i = 0; i + 2 < events.length; i += 3) {
      const id = events[i] as number
      const kind = events[i + 1] as number
      const ws = this.#get(id)
      if (!ws) continue
      const handlers = ws[HANDLERS]
      if (kind <= 1) {
        const message = handlers.message
        if (!message) continue
        try {
          const out = message(ws, events[i + 2] as string | Buffer, kind === 1)
          if (isThenable(out)) out.then(undefined, (err: unknown) => this.#threw(ws, err))
        } catch (err) {
          this.#threw(ws, err)
        }
      } else if (kind === 2) {
        if (handlers.drain) this.#run(ws, () => handlers.drain!(ws))
      } else {
        this.#closed(id, kind, events[i + 2] as string)
      }
    }
  }

  /** Request `id` was abandoned before its upgrade: a socket opened for it is closed. */
  abandoned(id: number): void {
    this.#closed(id, 1006, '')
  }

  #closed(id: number, code: number, reason: string): void {
    const ws = this.#open.get(id)
    if (!ws) return
    this.#open.delete(id)
    const handlers = ws[HANDLERS]
    if (handlers.close) this.#run(ws, () => handlers.close!(ws, code, reason))
  }

  #run(ws: RatWebSocket<unknown>, f: () => unknown): void {
    try {
      const out = f()
      if (isThenable(out)) out.then(undefined, (err: unknown) => this.#threw(ws, err))
    } catch (err) {
      this.#threw(ws, err)
    }
  }

  #threw(ws: RatWebSocket<unknown>, err: unknown): void {
    this.#logError(err, 'WebSocket handler failed')
    try {
      ws.close(1011, 'handler error')
    } catch {
      // Already closed.
    }
  }
}
