import type { BaseStream } from './stream.js'

/**
 * Items written between two turns of the event loop before `pump` lets other work run:
 * a producer that never waits (a synchronous generator, an async one that awaits nothing)
 * on a client that keeps up would otherwise hold the JS thread forever.
 */
const YIELD_EVERY = 1024

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Writes every item of `items` with `write`, waiting for the engine's queue to drain
 * whenever a write reports it full, and stops (running the generator's `finally`) as soon
 * as the client disconnects.
 *
 * A synchronous iterable is read without an `await` per item (the loop only suspends on
 * backpressure and every `YIELD_EVERY` items), which is several times cheaper per item
 * than an async generator.
 */
export async function pump<T>(
  items: Iterable<T> | AsyncIterable<T>,
  stream: BaseStream,
  write: (item: T) => boolean,
): Promise<void> {
  const sync = !(Symbol.asyncIterator in items)
  const it: Iterator<T> | AsyncIterator<T> = sync
    ? (items as Iterable<T>)[Symbol.iterator]()
    : (items as AsyncIterable<T>)[Symbol.asyncIterator]()
  // A generator suspended at an `await` learns of the disconnect through `return()`, which
  // runs its `finally` once that await settles. (A synchronous one is never running when
  // the notice arrives: the loop below is suspended then.)
  stream.onClose(() => void Promise.resolve(it.return?.()).catch(() => {}))
  let done = false
  let sinceYield = 0
  try {
    for (;;) {
      const r = sync ? (it as Iterator<T>).next() : await it.next()
      if (r.done) {
        done = true
        break
      }
      // A write to a closed stream returns false, so `closed` is only asked then (one
      // native call per item at most, not two).
      if (!write(r.value)) {
        if (stream.closed || !(await stream.ready())) break
        sinceYield = 0
      } else if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0
        await nextTurn()
        if (stream.closed) break
      }
    }
  } finally {
    if (!done) await it.return?.()
  }
}
