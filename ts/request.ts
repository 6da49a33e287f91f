import type { Call } from './call.js'
import { fromNative, HttpError, RatError } from './errors.js'

const KEY = Symbol('RatRequest')

/** Makes the request object of a call. */
export let newRequest!: (call: Call) => RatRequest<unknown>
/** True once the client has gone (or the server closed the request). */
export let isAborted!: (req: RatRequest<unknown>) => boolean
/** The engine reports the client gone: the request's signal aborts. */
export let abortRequest!: (req: RatRequest<unknown>) => void

/** The request a handler receives. Fields are read from the engine on first use. */
export class RatRequest<P = Record<string, string | number>> {
  readonly #call: Call
  #params?: P
  #query?: Record<string, string | string[]>
  #headers?: Record<string, string | string[]>
  #body?: Buffer
  #controller?: AbortController
  #aborted = false
  #locals?: Record<string, unknown>
  #lastEventId?: string | null
  #remoteAddress?: string | null
  #remotePort?: number | null

  private constructor(key: symbol, call: Call) {
    if (key !== KEY) throw new RatError('ERR_INVALID_ARGUMENT', 'a request is made by the app for its handler')
    this.#call = call
  }

  static {
    newRequest = (call) => new RatRequest(KEY, call)
    isAborted = (req) => req.#aborted
    abortRequest = (req) => {
      req.#aborted = true
      req.#controller?.abort(new Error('client disconnected'))
    }
  }

  /** Upper-case method. */
  get method(): string {
    return this.#call.method
  }

  /** The path as sent (percent-encoded), without the query. */
  get path(): string {
    return this.#call.path
  }

  /** Path and query, as sent. */
  get url(): string {
    const q = this.#call.queryString
    return q == null ? this.path : `${this.path}?${q}`
  }

  /** Path parameters, decoded; `<int:x>` and `<float:x>` are numbers. */
  get params(): P {
    if (!this.#params) {
      const raw = this.#call.rawParams
      const out: Record<string, string | number> = {}
      for (let i = 0; i < raw.length; i += 3) {
        const kind = raw[i + 2]
        out[raw[i]] = kind === 'int' || kind === 'float' ? Number(raw[i + 1]) : raw[i + 1]
      }
      this.#params = out as P
    }
    return this.#params
  }

  /** Query parameters, decoded; a repeated key gives an array. */
  get query(): Record<string, string | string[]> {
    if (!this.#query) {
      const out: Record<string, string | string[]> = {}
      for (const [k, v] of new URLSearchParams(this.#call.queryString ?? '')) {
        const prev = out[k]
        out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v]
      }
      this.#query = out
    }
    return this.#query
  }

  /** Headers with lower-case names; a repeated header gives an array. */
  get headers(): Record<string, string | string[]> {
    if (!this.#headers) {
      const raw = this.#call.rawHeaders
      const out: Record<string, string | string[]> = {}
      for (let i = 0; i < raw.length; i += 2) {
        const prev = out[raw[i]]
        const v = raw[i + 1]
        out[raw[i]] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v]
      }
      this.#headers = out
    }
    return this.#headers
  }

  /** The first value of a header (case-insensitive). */
  header(name: string): string | undefined {
    const v = this.headers[name.toLowerCase()]
    return Array.isArray(v) ? v[0] : v
  }

  /** `Last-Event-ID` header, or the `lastEventId` query parameter; null when absent. */
  get lastEventId(): string | null {
    if (this.#lastEventId === undefined) this.#lastEventId = this.#call.lastEventId
    return this.#lastEventId
  }

  /** The client's IP address. */
  get remoteAddress(): string | null {
    if (this.#remoteAddress === undefined) this.#remoteAddress = this.#call.remoteAddress
    return this.#remoteAddress
  }

  /** The client's port. */
  get remotePort(): number | null {
    if (this.#remotePort === undefined) this.#remotePort = this.#call.remotePort
    return this.#remotePort
  }

  /**
   * The body, read in full by the engine within its size limit. On routes registered with
   * `streamBody: true` use `stream()` (or `text()`/`json()`/`buffer()`) instead.
   */
  get body(): Buffer {
    if (this.#call.bodyStreamed) {
      throw new RatError('ERR_BODY_STREAMED', 'this route streams its body: use `for await (const chunk of req.stream())` or `await req.buffer()`')
    }
    return (this.#body ??= this.#call.body)
  }

  /**
   * The body chunk by chunk as the client sends it (routes with `streamBody: true`); on
   * other routes, the whole body as one chunk. Past the route's limit it throws a 413
   * `HttpError`.
   */
  async *stream(): AsyncGenerator<Buffer> {
    if (!this.#call.bodyStreamed) {
      if (this.body.length > 0) yield this.body
      return
    }
    for (;;) {
      let chunk: Buffer | null
      try {
        chunk = await this.#call.readChunk()
      } catch (err) {
        const e = fromNative(err)
        if (e instanceof RatError && e.code === 'ERR_BODY_TOO_LARGE') throw new HttpError(413, e.message, { cause: e })
        throw new HttpError(400, e instanceof Error ? e.message : String(e), { cause: e })
      }
      if (chunk === null) return
      yield chunk
    }
  }

  /** The whole body as one Buffer (reads a streamed body to its end). */
  async buffer(): Promise<Buffer> {
    if (!this.#call.bodyStreamed) return this.body
    if (this.#body) return this.#body
    const parts: Buffer[] = []
    for await (const c of this.stream()) parts.push(c)
    return (this.#body = Buffer.concat(parts))
  }

  /** The body as UTF-8 text. */
  async text(): Promise<string> {
    return (await this.buffer()).toString('utf8')
  }

  /** The body parsed as JSON; invalid JSON is a 400 with a message saying why. */
  async json<T = unknown>(): Promise<T> {
    const text = await this.text()
    try {
      return JSON.parse(text) as T
    } catch (err) {
      throw new HttpError(400, `invalid JSON body: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Aborts when the client disconnects before its response is complete (a stream's client,
   * or one that gave up on a handler that returned a promise) or the server closes.
   */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort(new Error('client disconnected'))
    }
    return this.#controller.signal
  }

  /**
   * What hooks (`app.use`) leave for the handler, e.g. the authenticated user. A plain
   * object, created on first use; assignable.
   */
  get locals(): Record<string, unknown> {
    return (this.#locals ??= {})
  }
  set locals(value: Record<string, unknown>) {
    this.#locals = value
  }
}
