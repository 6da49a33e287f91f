/** Every error rat-engine throws is a `RatError`; `code` says which kind. */
export class RatError extends Error {
  /** A stable code such as `ERR_ROUTE`, `ERR_INVALID_FIELD`, `ERR_IO`, `ERR_INVALID_ARGUMENT`. */
  readonly code: string

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RatError'
    this.code = code
  }
}

/**
 * Throw it from a handler to answer with this status and a JSON body
 * `{ "error": message, "status": status }` (when the response has not started).
 */
export class HttpError extends RatError {
  readonly status: number
  readonly headers: Record<string, string>

  constructor(status: number, message: string, options?: { headers?: Record<string, string>; cause?: unknown }) {
    super('ERR_HTTP_' + status, message, options)
    this.name = 'HttpError'
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RatError('ERR_INVALID_ARGUMENT', `invalid HttpError status ${status}: use 400..599`)
    }
    this.status = status
    this.headers = options?.headers ?? {}
  }
}

/** Turns a native error (an `Error` whose `code` the binding set) into a `RatError`; other values pass through. */
export function fromNative(err: unknown): unknown {
  if (err instanceof Error && !(err instanceof RatError)) {
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' && code.startsWith('ERR_')) return new RatError(code, err.message, { cause: err })
  }
  return err
}

/** Calls `fn`, rethrowing native errors as `RatError`. */
export function native<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}
