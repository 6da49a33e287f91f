// HTTP/1.1 over a raw `node:net` socket, for tests that need byte-level control: pausing
// reads, half-open connections, malformed requests, thousands of cheap clients.
import net from 'node:net'
import { within } from './wait.js'

export interface RawHead {
  status: number
  /** Lower-case names; repeated headers as arrays. */
  headers: Record<string, string | string[]>
}

/** Decodes a chunked transfer-encoded body incrementally. */
class ChunkedDecoder {
  #buf: Buffer = Buffer.alloc(0)
  #remaining = -1 // bytes left in the current chunk; -1 while reading a size line
  done = false

  /** Feeds wire bytes; calls `out` with each piece of body. */
  feed(data: Buffer, out: (piece: Buffer) => void): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, data]) : data
    while (!this.done) {
      if (this.#remaining < 0) {
        const eol = this.#buf.indexOf('\r\n')
        if (eol < 0) return
        const size = parseInt(this.#buf.subarray(0, eol).toString('latin1').split(';')[0], 16)
        if (Number.isNaN(size)) throw new Error(`bad chunk size line: ${this.#buf.subarray(0, eol).toString('latin1')}`)
        this.#buf = this.#buf.subarray(eol + 2)
        if (size === 0) {
          this.done = true
          return
        }
        this.#remaining = size
      }
      if (this.#remaining > 0) {
        if (this.#buf.length === 0) return
        const piece = this.#buf.subarray(0, this.#remaining)
        this.#buf = this.#buf.subarray(piece.length)
        this.#remaining -= piece.length
        out(piece)
      }
      if (this.#remaining === 0) {
        if (this.#buf.length < 2) return
        this.#buf = this.#buf.subarray(2)
        this.#remaining = -1
      }
    }
  }
}

export interface RawRequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  /** Stop reading from the socket once the head has arrived (until `resume()`). */
  pauseAfterHead?: boolean
  /** Keep body pieces in `chunks` (see `body()`). @default true */
  keep?: boolean
}

/** How a raw response ended: the body's last chunk, or the connection going away. */
export type RawEnd = 'complete' | 'closed'

/**
 * One request on its own connection. `head` resolves with the status line and headers;
 * body bytes (chunked encoding removed) go to `onBody` listeners and `body`.
 */
export class RawClient {
  readonly socket: net.Socket
  readonly head: Promise<RawHead>
  /** Resolves when the body is complete or the connection closed, whichever first. */
  readonly ended: Promise<RawEnd>
  readonly chunks: Buffer[] = []
  bodyBytes = 0
  #listeners: Array<(piece: Buffer) => void> = []
  #resumed = false

  constructor(port: number, path: string, options: RawRequestOptions = {}) {
    const socket = net.connect({ host: '127.0.0.1', port })
    this.socket = socket
    const { method = 'GET', headers = {}, body } = options
    const lines = [`${method} ${path} HTTP/1.1`, `host: 127.0.0.1:${port}`]
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
    if (body !== undefined) lines.push(`content-length: ${Buffer.byteLength(body)}`)
    socket.write(lines.join('\r\n') + '\r\n\r\n')
    if (body !== undefined) socket.write(body)

    let resolveHead!: (h: RawHead) => void
    let rejectHead!: (e: Error) => void
    this.head = new Promise((res, rej) => ((resolveHead = res), (rejectHead = rej)))
    this.head.catch(() => {})
    let resolveEnd!: (e: RawEnd) => void
    this.ended = new Promise((res) => (resolveEnd = res))

    let pending: Buffer = Buffer.alloc(0)
    let decoder: ChunkedDecoder | null = null
    let headDone = false
    const keep = options.keep ?? true
    const deliver = (piece: Buffer) => {
      if (keep) this.chunks.push(piece)
      this.bodyBytes += piece.length
      for (const fn of this.#listeners) fn(piece)
    }
    socket.on('data', (data: Buffer) => {
      if (headDone) {
        if (decoder) {
          decoder.feed(data, deliver)
          if (decoder.done) resolveEnd('complete')
        } else deliver(data)
        return
      }
      pending = Buffer.concat([pending, data])
      const end = pending.indexOf('\r\n\r\n')
      if (end < 0) return
      const [statusLine, ...headerLines] = pending.subarray(0, end).toString('latin1').split('\r\n')
      const hs: Record<string, string | string[]> = {}
      for (const line of headerLines) {
        const i = line.indexOf(':')
        const k = line.slice(0, i).trim().toLowerCase()
        const v = line.slice(i + 1).trim()
        const prev = hs[k]
        hs[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v]
      }
      headDone = true
      const rest = pending.subarray(end + 4)
      const status = Number(statusLine.split(' ')[1])
      if (hs['transfer-encoding'] === 'chunked') decoder = new ChunkedDecoder()
      resolveHead({ status, headers: hs })
      if (options.pauseAfterHead && !this.#resumed) socket.pause()
      if (rest.length) {
        if (decoder) {
          decoder.feed(rest, deliver)
          if (decoder.done) resolveEnd('complete')
        } else deliver(rest)
      }
      if (!decoder && hs['content-length'] === '0') resolveEnd('complete')
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      rejectHead(new Error('connection closed before the response head'))
      resolveEnd('closed')
    })
  }

  /** Calls `fn` with every later piece of body. */
  onBody(fn: (piece: Buffer) => void): void {
    this.#listeners.push(fn)
  }

  /** Reads again after `pauseAfterHead` (also when called before the head arrived). */
  resume(): void {
    this.#resumed = true
    this.socket.resume()
  }

  /** The body so far. */
  body(): Buffer {
    return Buffer.concat(this.chunks)
  }

  /** Closes the connection. */
  destroy(): void {
    this.socket.destroy()
  }
}

/** Opens a request on a new raw connection. */
export function rawRequest(port: number, path: string, options?: RawRequestOptions): RawClient {
  return new RawClient(port, path, options)
}

/**
 * Writes `bytes` on a new connection, optionally half-closes it, and returns everything
 * the server sent until it closed the connection (or `timeoutMs` passed: then what came).
 */
export async function rawExchange(
  port: number,
  bytes: string | Buffer,
  { halfClose = false, timeoutMs = 3000 }: { halfClose?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  socket.on('error', () => {})
  // Half-open is allowed so that `halfClose` can send FIN and still read; once the
  // server ends its side, end ours.
  socket.on('end', () => socket.end())
  socket.write(bytes)
  if (halfClose) socket.end()
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  await within(timeoutMs, 'server closing the connection', closed).catch(() => socket.destroy())
  return Buffer.concat(chunks).toString('latin1')
}
