// What every peer shares from ../../../shared/BENCH-CONTRACT.md: env, query validation,
// the broadcast payload and the process lifecycle. Kept free of Node-only APIs so the Bun
// peer uses it too.

export const PORT = Number(process.env.PORT ?? 3000)
export const PUB_INTERVAL_MS = Number(process.env.PUB_INTERVAL_MS ?? 100)
export const HOST = '127.0.0.1'
/** Largest /chunked write size accepted (a bigger one is a 400, not a huge allocation). */
export const MAX_WRITE = 16 << 20

/** `value` as a positive safe integer no larger than `max`, else null. */
function positive (value, max = Number.MAX_SAFE_INTEGER) {
  if (typeof value !== 'string' || !/^[1-9][0-9]*$/.test(value)) return null
  const n = Number(value)
  return Number.isSafeInteger(n) && n <= max ? n : null
}

/** The one value of `name` in the request target's query, or null if absent or repeated. */
function param (url, name) {
  const q = url.indexOf('?')
  if (q < 0) return null
  const all = new URLSearchParams(url.slice(q + 1)).getAll(name)
  return all.length === 1 ? all[0] : null
}

/** `n` of /sse/count?n=K, or null (answer 400). Accepts a path or a full URL. */
export function countParam (url) {
  return positive(param(url, 'n'))
}

/** `{ bytes, size }` of /chunked?bytes=B&size=S, or null (answer 400). */
export function chunkedParams (url) {
  const bytes = positive(param(url, 'bytes'))
  const size = positive(param(url, 'size'), MAX_WRITE)
  return bytes === null || size === null ? null : { bytes, size }
}

/** The path part of a request target. */
export function pathOf (url) {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

let seq = 0
let clockOffset = 0n
/**
 * For runtimes whose `process.hrtime` counts from their own start (Bun) rather than from
 * the CLOCK_MONOTONIC epoch as Node's does: the constant to add to it.
 */
export function setHrtimeOffset (offset) {
  clockOffset = offset
}

/** The next broadcast event's data line: `t` is CLOCK_MONOTONIC ns, a JSON number. */
export function nextEventData () {
  const t = process.hrtime.bigint() + clockOffset
  return PUB_BYTES > 0 ? `{"seq":${seq},"t":${t},"rows":[${tradeRows(seq++)}]}` : `{"seq":${seq++},"t":${t}}`
}

/** PUB_BYTES (env): events of about that size, as examples/bench-server.ts makes them. */
const PUB_BYTES = Number(process.env.PUB_BYTES ?? 0)

/** A table of trades for event `s`: JSON that compresses as real data does. */
function tradeRows (s) {
  let out = ''
  for (let r = 0; out.length < PUB_BYTES - 40; r++) {
    const i = s * 31 + r
    out += `${r ? ',' : ''}{"id":${i},"sym":"SYM${(i * 7) % 50}","price":${100 + ((i * 13) % 900)}.${(i * 31) % 100},"qty":${(i * 17) % 1000},"side":"${i % 2 ? 'sell' : 'buy'}"}`
  }
  return out
}

/** The data of the i-th /sse/count event. */
export function countData (i) {
  return `{"i":${i}}`
}

/** Announces readiness the way the runner waits for it. */
export function announce (port) {
  console.log(`listening ${port}`)
}

/** Runs `close` on SIGTERM, then exits (also if `close` hangs on open streams). */
export function onSigterm (close) {
  process.once('SIGTERM', () => {
    setTimeout(() => process.exit(0), 500).unref?.()
    Promise.resolve(close()).finally(() => process.exit(0))
  })
}
