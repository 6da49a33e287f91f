// better-sse on node:http: one Session per subscriber registered with a Channel that
// broadcasts each event; /sse/count pushes through session.iterate. Keep-alive comments and
// the initial retry field are off so every server sends the same events.
import http from 'node:http'
import { createSession, createChannel } from 'better-sse'
import { badRequest, writeChunked } from './node-helpers.mjs'
import { PORT, PUB_INTERVAL_MS, HOST, pathOf, countParam, chunkedParams, countData, nextEventData, announce, onSigterm } from './common.mjs'

const SESSION = { keepAlive: null, retry: null, serializer: (data) => data }
const channel = createChannel()

async function sseCount (req, res, n) {
  const session = await createSession(req, res, SESSION)
  await session.iterate((function * () {
    for (let i = 0; i < n; i++) yield countData(i)
  })())
  res.end()
}

const server = http.createServer((req, res) => {
  switch (pathOf(req.url)) {
    case '/hello':
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 }).end('hello')
      return
    case '/sse/broadcast':
      createSession(req, res, SESSION).then((session) => channel.register(session))
      return
    case '/sse/count': {
      const n = countParam(req.url)
      if (n === null) return badRequest(res)
      sseCount(req, res, n).catch(() => res.destroy())
      return
    }
    case '/chunked': {
      const p = chunkedParams(req.url)
      // better-sse has no octet streams: node:http by hand.
      return p === null ? badRequest(res) : writeChunked(res, p)
    }
    default:
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
  }
})

setInterval(() => channel.broadcast(nextEventData()), PUB_INTERVAL_MS)

server.listen(PORT, HOST, () => announce(server.address().port))
onSigterm(() => new Promise((resolve) => {
  server.closeAllConnections()
  server.close(resolve)
}))
