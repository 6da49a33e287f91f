// Our server for `npm run bench` (docs/benchmarks.md), implementing
// ../shared/BENCH-CONTRACT.md with the public API: `/hello` is a JS handler, `/sse/broadcast`
// a channel (published from JS, fanned out by the engine with no JS per subscriber),
// `/sse/count` a generator, `/chunked` explicit writes with backpressure.
//
// Run: `npm run bench:server` (PORT and PUB_INTERVAL_MS from the environment). With
// TLS_CERT and TLS_KEY (PEM file paths) it serves TLS, ALPN offering h2 and http/1.1.
// With REDIS_URL (and REDIS_KEY_PREFIX) its channel is shared through Redis (docs/redis.md).
// PUB_INTERVAL_MS=0 publishes as fast as the channel takes it (see `pump`); GET /stats
// tells what was published (`{"published","rejected","at"}`, `at` in CLOCK_MONOTONIC ns).
//
// It imports the package by its name, so it runs the compiled library (`npm run build`) as
// an installed one does. (tsx compiles `ts/` to CommonJS on the fly, where every call from
// one module to another goes through a getter: about 15% of /sse/count's events/s.)
import { readFileSync } from 'node:fs'
import { createApp, HttpError, RatError } from 'rat-engine'

const PORT = Number(process.env.PORT ?? 3000)
const PUB_INTERVAL_MS = Number(process.env.PUB_INTERVAL_MS ?? 100)
/** Largest /chunked write size accepted, as in every peer: a bigger one is a 400. */
const MAX_WRITE = 16 << 20
/**
 * PUB_INTERVAL_MS=0 through Redis: events published and not yet read back from Redis past
 * which the publisher waits, so its own reader stays well within the stream's 10,000
 * entries (what lags further is trimmed).
 */
const PUMP_WINDOW = 5000
/** PUB_INTERVAL_MS=0: events published per turn of the event loop at most. */
const PUMP_BATCH = 1000

/** Query parameter `name` as a positive integer no larger than `max`, else a 400. */
function positive(value: string | string[] | undefined, name: string, max = Number.MAX_SAFE_INTEGER): number {
  const n = typeof value === 'string' && /^[1-9][0-9]*$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n) || n > max) throw new HttpError(400, `${name} must be a positive integer up to ${max}`)
  return n
}

// A synchronous generator, the counterpart of the node:http peer's plain write loop: the
// engine reads it without an await per item. (An async generator works the same and costs
// about 1.5x more JS time per event, all of it V8's promise machinery: ~1.2 vs ~0.8 µs of
// server CPU per event here.)
function* countEvents(n: number): Generator<string> {
  for (let i = 0; i < n; i++) yield `{"i":${i}}`
}

async function main(): Promise<void> {
  // Heartbeats off: no peer sends keep-alive comments either, and an idle stream must stay
  // idle for the RSS-per-connection measurement.
  // BENCH_EDGE (bench/lib/catalog.mjs, RAT_BENCH_EDGE): the production edge on, to measure
  // its cost: CORS for every route and a bearer token on /hello, checked by the engine; or
  // one JS hook on /hello.
  // BENCH_EDGE=gzip with PUB_BYTES: broadcasts compressed (gzip only), for the compression
  // scenario.
  const edge = process.env.BENCH_EDGE
  const app = createApp({
    heartbeatMs: 0,
    ...(edge === 'cors-token'
      ? { cors: { origin: 'https://app.example' }, auth: [{ prefix: '/hello', bearer: ['bench-token'] }] }
      : {}),
    ...(edge === 'gzip' ? { compression: { encodings: ['gzip'] as Array<'gzip'> } } : {}),
    ...(process.env.REDIS_URL ? { redis: { url: process.env.REDIS_URL, keyPrefix: process.env.REDIS_KEY_PREFIX ?? 'bench:' } } : {}),
  })
  if (edge === 'hook') {
    app.use('/hello', (req) => {
      req.locals.seen = true
    })
  }

  app.text('/hello', () => 'hello')
  app.ws('/ws/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { idleTimeoutMs: 0 })

  // Publishing as fast as it can, a subscriber may be handed events faster than the
  // client reads them for a while: a deeper queue than the default 64 KiB before it
  // counts as slow (and is closed).
  const broadcast = app.channel('broadcast', { history: 0, ...(PUB_INTERVAL_MS === 0 ? { highWaterMark: 16 << 20 } : {}) })
  app.sse('/sse/broadcast', broadcast)
  app.ws('/ws/broadcast', broadcast, { idleTimeoutMs: 0 })
  let seq = 0
  // PUB_BYTES: events of about that size, a table of trades (JSON that compresses as real
  // data does, not a run of one byte).
  const pubBytes = Number(process.env.PUB_BYTES ?? 0)
  const rows = (s: number) => {
    let out = ''
    for (let r = 0; out.length < pubBytes - 40; r++) {
      const i = s * 31 + r
      out += `${r ? ',' : ''}{"id":${i},"sym":"SYM${(i * 7) % 50}","price":${100 + ((i * 13) % 900)}.${(i * 31) % 100},"qty":${(i * 17) % 1000},"side":"${i % 2 ? 'sell' : 'buy'}"}`
    }
    return out
  }
  // Publishes refused because the Redis buffer was full (ERR_REDIS): sent again later
  // with the same seq, so a gap at a subscriber is a lost event.
  let rejected = 0
  // `t` must be a JSON number, and a bigint does not survive JSON.stringify: built by hand.
  const next = () => {
    const t = process.hrtime.bigint()
    return pubBytes > 0 ? `{"seq":${seq},"t":${t},"rows":[${rows(seq)}]}` : `{"seq":${seq},"t":${t}}`
  }
  // PUB_INTERVAL_MS=0: once someone subscribes, up to PUMP_BATCH publishes per turn; a
  // shared channel keeps at most PUMP_WINDOW of them unread by this process's reader.
  const shared = !!process.env.REDIS_URL
  const pump = () => {
    if (broadcast.subscribers === 0) return void setTimeout(pump, 10)
    let n = PUMP_BATCH
    if (shared) n = Math.min(n, PUMP_WINDOW - (seq - broadcast.metrics().published))
    for (let i = 0; i < n; i++) {
      try {
        broadcast.publish(next())
      } catch (err) {
        if (!(err instanceof RatError && err.code === 'ERR_REDIS')) throw err
        rejected++
        break
      }
      seq++
    }
    if (n > 0) setImmediate(pump)
    else setTimeout(pump, 1)
  }
  if (PUB_INTERVAL_MS === 0) pump()
  else if (process.env.PUB_ALIGN) {
    // PUB_ALIGN=1: publish at the multiples of the interval on the wall clock, so that
    // several processes publish at the same moments (bench/lib/catalog.mjs, rat-engine-split).
    const tick = () => {
      broadcast.publish(next())
      seq++
      setTimeout(tick, PUB_INTERVAL_MS - (Date.now() % PUB_INTERVAL_MS))
    }
    setTimeout(tick, PUB_INTERVAL_MS - (Date.now() % PUB_INTERVAL_MS))
  } else {
    setInterval(() => {
      broadcast.publish(next())
      seq++
    }, PUB_INTERVAL_MS)
  }
  app.text('/stats', () => JSON.stringify({ published: seq, rejected, at: String(process.hrtime.bigint()) }))

  // Validated before the generator starts, so a bad `n` is a 400 rather than a broken stream.
  app.sse('/sse/count', (req) => countEvents(positive(req.query.n, 'n')))

  app.chunked(
    '/chunked',
    async (req, stream) => {
      const bytes = positive(req.query.bytes, 'bytes')
      const size = positive(req.query.size, 'size', MAX_WRITE)
      const buf = Buffer.alloc(size)
      for (let left = bytes; left > 0; ) {
        const len = Math.min(size, left)
        left -= len
        if (!stream.write(len === size ? buf : buf.subarray(0, len)) && !(await stream.ready())) return
      }
      stream.end()
    },
    { contentType: 'application/octet-stream' },
  )

  const { TLS_CERT, TLS_KEY } = process.env
  const tls = TLS_CERT && TLS_KEY ? { cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY) } : undefined
  const { port } = await app.listen({ host: '127.0.0.1', port: PORT, ...(tls ? { tls } : {}) })
  console.log('listening', port)

  process.once('SIGTERM', () => {
    // No grace period: broadcast streams never finish on their own.
    app.close(0).finally(() => process.exit(0))
  })
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
