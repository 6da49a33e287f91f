// Plain responses: what a handler returns, and the helpers that build explicit replies.

/** An explicit response: status, headers and body. Build it with `reply`, `json`, `text`, `html`. */
export class Reply {
  constructor(
    readonly status: number,
    readonly body: string | Uint8Array | null,
    readonly headers: Record<string, string | string[]> = {},
  ) {}
}

export interface ReplyInit {
  status?: number
  headers?: Record<string, string | string[]>
}

/** A response with any body; set `content-type` in `headers` when it is not text. */
export function reply(body: string | Uint8Array | null, init: ReplyInit = {}): Reply {
  return new Reply(init.status ?? 200, body, init.headers)
}

/**
 * The JSON text of `value`. Throws a TypeError for values JSON has no text for (a
 * function, a symbol, undefined, an object whose `toJSON` gives one of those), as
 * `JSON.stringify` does for a BigInt or a circular object. `what` names the value.
 */
export function jsonText(value: unknown, what: string): string {
  const text: string | undefined = JSON.stringify(value)
  if (text === undefined) throw new TypeError(`${what} must be JSON-serializable, not ${typeof value}`)
  return text
}

/** A JSON response. */
export function json(value: unknown, init: ReplyInit = {}): Reply {
  return new Reply(init.status ?? 200, jsonText(value, 'a JSON reply'), { 'content-type': 'application/json', ...init.headers })
}

/** A text/plain response. */
export function text(body: string, init: ReplyInit = {}): Reply {
  return new Reply(init.status ?? 200, body, { 'content-type': 'text/plain; charset=utf-8', ...init.headers })
}

/** A text/html response. */
export function html(body: string, init: ReplyInit = {}): Reply {
  return new Reply(init.status ?? 200, body, { 'content-type': 'text/html; charset=utf-8', ...init.headers })
}

/** A redirect (302 unless given). */
export function redirect(location: string, status = 302): Reply {
  return new Reply(status, null, { location })
}

const JSON_HEADERS = ['content-type', 'application/json']
const HTML_HEADERS = ['content-type', 'text/html; charset=utf-8']

/** Flattens headers for the native call: `[name, value, name, value, ...]`. */
export function flatHeaders(headers: Record<string, string | string[]>): string[] {
  const out: string[] = []
  for (const [k, v] of Object.entries(headers)) {
    if (Array.isArray(v)) for (const one of v) out.push(k, one)
    else out.push(k, v)
  }
  return out
}

/** How a route presents a plain value: `get` sends objects as JSON and strings as text. */
export type PlainStyle = 'auto' | 'text' | 'html'

/**
 * What the engine should send for a handler's return value: status, flat headers, body.
 * Throws when the value is to be sent as JSON and cannot be (see `jsonText`).
 */
export function toWire(value: unknown, style: PlainStyle): [number, string[] | null, string | Uint8Array | null] {
  if (value instanceof Reply) return [value.status, flatHeaders(value.headers), value.body]
  if (value === undefined || value === null) return [204, null, null]
  if (typeof value === 'string') return [200, style === 'html' ? HTML_HEADERS : null, value]
  if (value instanceof Uint8Array) return [200, ['content-type', 'application/octet-stream'], value]
  return [200, JSON_HEADERS, jsonText(value, "a handler's result")]
}
