import type { BaseStream } from './stream.js'

/**
 * Writes every item of `items` with `write`, waiting for the engine's queue to drain
 * whenever a write reports it full, and stops (running the generator's `finally`) as soon
 * as the client disconnects.
 */
export async function pump<T>(
  items: Iterable<T> | AsyncIterable<T>,
  stream: BaseStream,
  write: (item: T) => boolean,
): Promise<void> {
  const it: Iterator<T> | AsyncIterator<T> =
    Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : (items as Iterable<T>)[Symbol.iterator]()
  // A generator suspended at an `await` learns of the disconnect through `return()`, which
  // runs its `finally` once that await settles.
  stream.onClose(() => void Promise.resolve(it.return?.()).catch(() => {}))
  let done = false
  try {
    for (;;) {
      const r = await it.next()
      if (r.done) {
        done = true
        break
      }
      // A write to a closed stream returns false, so `closed` is only asked then (one
      // native call per item, not two).
      if (!write(r.value)) {
        if (stream.closed || !(await stream.ready())) break
      }
    }
  } finally {
    if (!done) await it.return?.()
  }
}
