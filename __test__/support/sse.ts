// SSE on the client side: a small spec parser for raw byte streams, a raw-socket SSE client
// for tests with many connections or paused reads, and helpers around `eventsource`.
import type { EventSource } from 'eventsource'
import { RawClient, type RawRequestOptions } from './raw.js'
import { waitFor } from './wait.js'

export interface SseMessage {
  event: string
  data: string
  id: string
  retry?: number
}

/**
 * The event-stream parser of the HTML spec: CRLF, LF or CR line ends, `data` lines joined
 * with LF, `id` kept across events, comments ignored.
 */
export class SseParser {
  #decoder = new TextDecoder()
  #line = ''
  #skipLf = false
  #data: string[] | null = null
  #event = ''
  #retry: number | undefined
  lastEventId = ''
  comments: string[] = []

  constructor(private readonly onEvent: (m: SseMessage) => void) {}

  feed(bytes: Uint8Array): void {
    const text = this.#decoder.decode(bytes, { stream: true })
    let start = 0
    if (this.#skipLf && text.length > 0) {
      this.#skipLf = false
      if (text.charCodeAt(0) === 10) start = 1
    }
    const eol = /\r\n|\r|\n/g
    eol.lastIndex = start
    for (let m = eol.exec(text); m !== null; m = eol.exec(text)) {
      // A CR at the very end may be the first half of a CRLF split across reads.
      if (m[0] === '\r' && m.index === text.length - 1) this.#skipLf = true
      this.#onLine(this.#line + text.slice(start, m.index))
      this.#line = ''
      start = m.index + m[0].length
    }
    this.#line += text.slice(start)
  }

  #onLine(line: string): void {
    if (line === '') {
      if (this.#data !== null) {
        this.onEvent({ event: this.#event || 'message', data: this.#data.join('\n'), id: this.lastEventId, retry: this.#retry })
      }
      this.#data = null
      this.#event = ''
      this.#retry = undefined
      return
    }
    if (line.startsWith(':')) {
      this.comments.push(line.slice(1).trimStart())
      return
    }
    const i = line.indexOf(':')
    const field = i < 0 ? line : line.slice(0, i)
    let value = i < 0 ? '' : line.slice(i + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') (this.#data ??= []).push(value)
    else if (field === 'event') this.#event = value
    else if (field === 'id' && !value.includes('\0')) this.lastEventId = value
    else if (field === 'retry' && /^\d+$/.test(value)) this.#retry = Number(value)
  }
}

/** Parses a complete event-stream body. */
export function parseSse(body: string | Uint8Array): SseMessage[] {
  const out: SseMessage[] = []
  const p = new SseParser((m) => out.push(m))
  p.feed(typeof body === 'string' ? new TextEncoder().encode(body) : body)
  return out
}

export interface RawSseOptions extends RawRequestOptions {
  /** Called with each event as it arrives. */
  onEvent?: (m: SseMessage) => void
  /** Keep events in `events` and body bytes in `chunks`. Off for high-volume readers. @default true */
  keep?: boolean
}

/** An SSE request on a raw socket; `events` fills as they arrive. */
export class RawSseClient extends RawClient {
  readonly events: SseMessage[] = []
  /** Events seen, kept or not. */
  count = 0
  readonly parser: SseParser

  constructor(port: number, path: string, options: RawSseOptions = {}) {
    const { onEvent, keep = true, ...request } = options
    super(port, path, { ...request, keep, headers: { accept: 'text/event-stream', ...request.headers } })
    this.parser = new SseParser((m) => {
      this.count++
      if (keep) this.events.push(m)
      onEvent?.(m)
    })
    this.onBody((piece) => this.parser.feed(piece))
  }

  /** Waits until at least `n` events have arrived. */
  async waitForEvents(n: number, timeoutMs = 5000): Promise<SseMessage[]> {
    await waitFor(`${n} SSE events (have ${this.count})`, () => this.count >= n, { timeoutMs })
    return this.events
  }
}

export interface Collected {
  type: string
  data: string
  lastEventId: string
}

/**
 * Listens on `es` for `types` and resolves with the first `count` events of those types
 * in arrival order. Rejects after `timeoutMs`, or on an error before the first event.
 */
export function collect(
  es: EventSource,
  { types = ['message'], count, timeoutMs = 5000 }: { types?: string[]; count: number; timeoutMs?: number },
): Promise<Collected[]> {
  return new Promise((resolve, reject) => {
    const got: Collected[] = []
    const timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms with ${got.length}/${count} events: ${JSON.stringify(got)}`)),
      timeoutMs,
    )
    const on = (e: MessageEvent) => {
      got.push({ type: e.type, data: String(e.data), lastEventId: e.lastEventId })
      if (got.length === count) {
        clearTimeout(timer)
        for (const t of types) es.removeEventListener(t, on)
        resolve(got)
      }
    }
    for (const t of types) es.addEventListener(t, on)
  })
}
