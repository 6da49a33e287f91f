// Bun.serve, run by the `bun` binary from the npm package. Broadcast writes one encoded
// frame into each subscriber's direct ReadableStream controller and flushes it; /sse/count
// and /chunked are pull streams, so Bun asks for the next piece only when it has room
// (its backpressure). idleTimeout 0: Bun would otherwise drop quiet SSE streams after 10 s.
// With TLS_CERT and TLS_KEY (PEM file paths) it serves TLS (HTTP/1.1: Bun.serve has no h2).
import { dlopen } from 'bun:ffi'
import zlib from 'node:zlib'
import { setHrtimeOffset, PORT, PUB_INTERVAL_MS, HOST, pathOf, countParam, chunkedParams, countData, nextEventData, announce, onSigterm } from './common.mjs'

/**
 * Bun's process.hrtime counts from process start; the client reads CLOCK_MONOTONIC. Read
 * that clock once through libc and keep the difference, so publish stays a plain hrtime.
 */
function calibrateClock () {
  const libc = dlopen('libc.so.6', { clock_gettime: { args: ['i32', 'ptr'], returns: 'i32' } })
  const ts = new BigInt64Array(2)
  const before = process.hrtime.bigint()
  if (libc.symbols.clock_gettime(1 /* CLOCK_MONOTONIC */, ts) !== 0) throw new Error('clock_gettime failed')
  const after = process.hrtime.bigint()
  setHrtimeOffset(ts[0] * 1_000_000_000n + ts[1] - (before + after) / 2n)
  libc.close()
}
calibrateClock()

const SSE_HEAD = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }
/**
 * BENCH_GZIP=1 (bench/lib/catalog.mjs, RAT_BENCH_COMPRESSION): each broadcast subscriber
 * that accepts gzip gets its own gzip stream, sync-flushed after every event (what a
 * server must do for events to decode on arrival).
 */
const GZIP = process.env.BENCH_GZIP === '1'
const GZIP_HEAD = { ...SSE_HEAD, 'content-encoding': 'gzip', vary: 'accept-encoding' }
const encoder = new TextEncoder()
const subscribers = new Set()

const badRequest = () => new Response('bad query', { status: 400 })

function broadcastStream (gzip) {
  let sub
  return new ReadableStream({
    type: 'direct',
    pull (c) {
      sub = gzip ? gzipSubscriber(c) : c
      subscribers.add(sub)
      // Bun sends the head with the first body bytes, and an idle subscriber must see its
      // head: one SSE comment (allowed by the contract) gets it out now.
      sub.write(': connected\n\n')
      sub.flush()
      // The stream lives until the client goes: pull must not resolve before then.
      return new Promise(() => {})
    },
    cancel () {
      subscribers.delete(sub)
      sub.close?.()
    }
  })
}

/** A subscriber whose writes go through its own gzip stream into `c`. */
function gzipSubscriber (c) {
  const gz = zlib.createGzip()
  gz.on('data', (d) => {
    c.write(d)
    c.flush()
  })
  gz.on('error', () => {})
  return {
    write: (frame) => gz.write(frame),
    flush: () => gz.flush(zlib.constants.Z_SYNC_FLUSH),
    close: () => gz.destroy()
  }
}

/** A pull stream of `count` pieces from `produce(i)`. */
function pullStream (count, produce) {
  let i = 0
  return new ReadableStream({
    pull (c) {
      c.enqueue(produce(i++))
      if (i === count) c.close()
    }
  })
}

function route (req) {
  const url = req.url
  switch (pathOf(url.slice(url.indexOf('/', url.indexOf('//') + 2)))) {
    case '/hello':
      return new Response('hello', { headers: { 'content-type': 'text/plain' } })
    case '/sse/broadcast': {
      const gzip = GZIP && /\bgzip\b/.test(req.headers.get('accept-encoding') ?? '')
      return new Response(broadcastStream(gzip), { headers: gzip ? GZIP_HEAD : SSE_HEAD })
    }
    case '/sse/count': {
      const n = countParam(url)
      if (n === null) return badRequest()
      return new Response(pullStream(n, (i) => encoder.encode(`data: ${countData(i)}\n\n`)), { headers: SSE_HEAD })
    }
    case '/chunked': {
      const p = chunkedParams(url)
      if (p === null) return badRequest()
      const buf = new Uint8Array(p.size)
      const writes = Math.ceil(p.bytes / p.size)
      const tail = buf.subarray(0, p.bytes - (writes - 1) * p.size)
      return new Response(pullStream(writes, (i) => (i === writes - 1 ? tail : buf)), {
        headers: { 'content-type': 'application/octet-stream' }
      })
    }
    default:
      return new Response('not found', { status: 404 })
  }
}

setInterval(() => {
  const frame = encoder.encode(`data: ${nextEventData()}\n\n`)
  for (const c of subscribers) {
    c.write(frame)
    c.flush()
  }
}, PUB_INTERVAL_MS)

const { TLS_CERT, TLS_KEY } = process.env
const tls = TLS_CERT && TLS_KEY ? { tls: { cert: Bun.file(TLS_CERT), key: Bun.file(TLS_KEY) } } : {}
const server = Bun.serve({
  port: PORT,
  hostname: HOST,
  idleTimeout: 0,
  fetch: (req, srv) => (req.url.endsWith('/ws/echo') && srv.upgrade(req) ? undefined : route(req)),
  websocket: { idleTimeout: 0, perMessageDeflate: false, message: (ws, data) => void ws.send(data) },
  ...tls
})
announce(server.port)
onSigterm(() => server.stop(true))
