// Bounded waiting: every loop in the suite ends by count or by time.

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Polls `check` every `intervalMs` until it returns a truthy value, which it returns.
 * Throws after `timeoutMs` with `what` in the message.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeoutMs = 5000, intervalMs = 10 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/** Rejects with a clear message if `promise` has not settled within `ms`. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** A promise with its resolve function, for events a test waits on. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/**
 * Waits until `value()` has not changed for `quietMs` (a producer that stalled on
 * backpressure, a counter that stopped) and returns it. Throws after `timeoutMs`.
 */
export async function plateau(what: string, value: () => number, { quietMs = 400, timeoutMs = 10_000 } = {}): Promise<number> {
  let last = Number.NaN
  let since = Date.now()
  await waitFor(
    what,
    () => {
      const v = value()
      if (v !== last) {
        last = v
        since = Date.now()
      }
      return Date.now() - since >= quietMs
    },
    { timeoutMs, intervalMs: 20 },
  )
  return last
}
