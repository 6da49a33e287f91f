// Stream helpers from the seeds' API, done as real streams: each item is produced and
// written when its turn comes, paced by the client (nothing is collected first).
import { jsonText } from './reply.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A source of chunks that a chunked route can return, with the content type to send. */
export interface StreamSource<T = string | Uint8Array> extends AsyncIterable<T> {
  readonly contentType: string
}

/** `chunkedResponse().addChunk('a').addDelay(800).addChunk('b')`, returned from `app.chunked`. */
export class ChunkedResponse implements StreamSource {
  #steps: Array<{ chunk: string | Uint8Array } | { delay: number }> = []
  #pace = 0
  contentType = 'text/plain; charset=utf-8'

  /** Appends a chunk. */
  addChunk(chunk: string | Uint8Array): this {
    this.#steps.push({ chunk })
    return this
  }

  /** Appends a pause before the next chunk. */
  addDelay(ms: number): this {
    this.#steps.push({ delay: ms })
    return this
  }

  /** Pauses `ms` before every chunk after the first. */
  withDelay(ms: number): this {
    this.#pace = ms
    return this
  }

  /** Sets the content type. */
  type(contentType: string): this {
    this.contentType = contentType
    return this
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string | Uint8Array> {
    let first = true
    for (const step of this.#steps) {
      if ('delay' in step) {
        await sleep(step.delay)
        continue
      }
      if (!first && this.#pace > 0) await sleep(this.#pace)
      first = false
      yield step.chunk
    }
  }
}

/** A new chunked response builder. */
export function chunkedResponse(): ChunkedResponse {
  return new ChunkedResponse()
}

type Source<T> = Iterable<T> | AsyncIterable<T>

function source<T, U>(items: Source<T>, contentType: string, map: (item: T) => U): StreamSource<U> {
  return {
    contentType,
    async *[Symbol.asyncIterator]() {
      for await (const item of items) yield map(item)
    },
  }
}

/** NDJSON (`application/x-ndjson`): one JSON value per line. */
export function jsonStream(values: Source<unknown>): StreamSource<string> {
  return source(values, 'application/x-ndjson', (v) => jsonText(v, 'an NDJSON value') + '\n')
}

/** Lines of text (`text/plain`), each followed by a newline. */
export function textStream(lines: Source<string>): StreamSource<string> {
  return source(lines, 'text/plain; charset=utf-8', (l) => l + '\n')
}

/** Binary chunks (`application/octet-stream`). */
export function binaryStream(chunks: Source<Uint8Array>): StreamSource<Uint8Array> {
  return source(chunks, 'application/octet-stream', (c) => c)
}

/** True for sync or async iterables (generators included), but not strings or bytes. */
export function isIterable(v: unknown): v is Iterable<unknown> | AsyncIterable<unknown> {
  if (v == null || typeof v !== 'object') return false
  if (v instanceof Uint8Array) return false
  return Symbol.asyncIterator in v || Symbol.iterator in v
}
