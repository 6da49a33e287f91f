// hono on @hono/node-server: streamSSE for both SSE routes, stream() for /chunked. Each
// write awaits the web stream's backpressure; broadcast calls writeSSE on every open stream.
import { Hono } from 'hono'
import { stream, streamSSE } from 'hono/streaming'
import { serve } from '@hono/node-server'
import { PORT, PUB_INTERVAL_MS, HOST, countParam, chunkedParams, countData, nextEventData, announce, onSigterm } from './common.mjs'

const app = new Hono()
const subscribers = new Set()

app.get('/hello', (c) => c.text('hello'))

app.get('/sse/broadcast', (c) => streamSSE(c, async (sse) => {
  // node-server sends the response head with the first body bytes, and an idle subscriber
  // must see its head: one SSE comment (allowed by the contract) gets it out now.
  sse.write(': connected\n\n')
  subscribers.add(sse)
  await new Promise((resolve) => sse.onAbort(resolve))
  subscribers.delete(sse)
}))

app.get('/sse/count', (c) => {
  const n = countParam(c.req.url)
  if (n === null) return c.text('bad query', 400)
  return streamSSE(c, async (sse) => {
    for (let i = 0; i < n; i++) await sse.writeSSE({ data: countData(i) })
  })
})

app.get('/chunked', (c) => {
  const p = chunkedParams(c.req.url)
  if (p === null) return c.text('bad query', 400)
  c.header('content-type', 'application/octet-stream')
  return stream(c, async (out) => {
    const buf = new Uint8Array(p.size)
    for (let left = p.bytes; left > 0;) {
      const len = Math.min(p.size, left)
      left -= len
      await out.write(len === p.size ? buf : buf.subarray(0, len))
    }
  })
})

setInterval(() => {
  const data = nextEventData()
  for (const sse of subscribers) sse.writeSSE({ data })
}, PUB_INTERVAL_MS)

const server = serve({ fetch: app.fetch, port: PORT, hostname: HOST }, (info) => announce(info.port))
onSigterm(() => {
  for (const sse of subscribers) sse.abort()
  return new Promise((resolve) => server.close(resolve))
})
