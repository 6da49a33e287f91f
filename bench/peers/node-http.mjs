// node:http by hand: the baseline every Node framework builds on. Broadcast is a loop over
// the open responses; /sse/count and /chunked honour backpressure through 'drain'.
// With TLS_CERT and TLS_KEY (PEM file paths) the same handler is served by node:https, or
// with HTTP2=1 by http2.createSecureServer (its compatibility API, HTTP/2 only).
import { readFileSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import { badRequest, pump, writeChunked } from './node-helpers.mjs'
import { WebSocketServer } from 'ws'
import { PORT, PUB_INTERVAL_MS, HOST, pathOf, countParam, chunkedParams, countData, nextEventData, announce, onSigterm } from './common.mjs'

const SSE_HEAD = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }
const subscribers = new Set()

/** Events written as fast as the socket takes them, pausing on 'drain'. */
function sseCount (res, n) {
  res.writeHead(200, SSE_HEAD)
  pump(res, n, (i) => `data: ${countData(i)}\n\n`)
}

function handle (req, res) {
  switch (pathOf(req.url)) {
    case '/hello':
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 }).end('hello')
      return
    case '/sse/broadcast':
      res.writeHead(200, SSE_HEAD)
      res.flushHeaders?.() // HTTP/2's writeHead sends the head itself
      subscribers.add(res)
      res.on('close', () => subscribers.delete(res))
      return
    case '/sse/count': {
      const n = countParam(req.url)
      return n === null ? badRequest(res) : sseCount(res, n)
    }
    case '/chunked': {
      const p = chunkedParams(req.url)
      return p === null ? badRequest(res) : writeChunked(res, p)
    }
    default:
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
  }
}

function createServer () {
  const { TLS_CERT, TLS_KEY, HTTP2 } = process.env
  if (!TLS_CERT || !TLS_KEY) return http.createServer(handle)
  const tls = { cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY) }
  return HTTP2 === '1' ? http2.createSecureServer({ ...tls, allowHTTP1: false }, handle) : https.createServer(tls, handle)
}
const server = createServer()

setInterval(() => {
  const frame = `data: ${nextEventData()}\n\n`
  for (const res of subscribers) res.write(frame)
}, PUB_INTERVAL_MS)

// WebSocket echo with the `ws` package on the same server (the usual Node setup).
const wss = new WebSocketServer({ server, path: '/ws/echo', perMessageDeflate: false })
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })))

server.listen(PORT, HOST, () => announce(server.address().port))
onSigterm(() => {
  for (const res of subscribers) res.destroy()
  return new Promise((resolve) => server.close(resolve))
})
