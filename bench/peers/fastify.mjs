// fastify 5 with @fastify/sse: SSE routes are `sse: 'only'` routes whose reply.sse sends
// messages (awaiting 'drain' itself). Strings are sent as-is; the default serializer would
// JSON-quote them.
import Fastify from 'fastify'
import fastifySse from '@fastify/sse'
import { writeChunked } from './node-helpers.mjs'
import { PORT, PUB_INTERVAL_MS, HOST, countParam, chunkedParams, countData, nextEventData, announce, onSigterm } from './common.mjs'

const app = Fastify({ logger: false })
await app.register(fastifySse, { heartbeatInterval: 0 })

const subscribers = new Set()

app.get('/hello', (req, reply) => {
  reply.type('text/plain')
  return 'hello'
})

app.get('/sse/broadcast', { sse: { kind: 'only', heartbeat: false } }, async (req, reply) => {
  reply.sse.keepAlive()
  reply.sse.sendHeaders()
  reply.raw.flushHeaders()
  subscribers.add(reply.sse)
  reply.sse.onClose(() => subscribers.delete(reply.sse))
})

app.get('/sse/count', { sse: { kind: 'only', heartbeat: false } }, async (req, reply) => {
  const n = countParam(req.url)
  if (n === null) return reply.code(400).type('text/plain').send('bad query')
  await reply.sse.send((async function * () {
    for (let i = 0; i < n; i++) yield countData(i)
  })())
})

app.get('/chunked', async (req, reply) => {
  const p = chunkedParams(req.url)
  if (p === null) return reply.code(400).type('text/plain').send('bad query')
  // No SSE here, so fastify's own path: hijack and write to the raw response with 'drain'.
  reply.hijack()
  writeChunked(reply.raw, p)
})

setInterval(() => {
  const data = nextEventData()
  for (const sse of subscribers) sse.send(data).catch(() => subscribers.delete(sse))
}, PUB_INTERVAL_MS)

await app.listen({ port: PORT, host: HOST })
announce(app.server.address().port)
onSigterm(() => {
  for (const sse of subscribers) sse.close()
  return app.close()
})
