// The `ws` package on node:http, perMessageDeflate with its defaults (context takeover both
// ways) and the 64-byte threshold rat-engine uses; a broadcast loops over the clients.
import http from 'node:http'
import { WebSocketServer } from 'ws'
import { nextMessage, EVENTS, EVERY_MS } from './rows.mjs'

const z = process.argv[2] !== 'plain'
const server = http.createServer((req, res) => {
  let n = 0
  const t = setInterval(() => {
    const m = nextMessage()
    for (const c of feed.clients) c.send(m)
    if (++n === EVENTS) clearInterval(t)
  }, EVERY_MS)
  res.end('ok')
})
const perMessageDeflate = z ? { threshold: 64 } : false
const echo = new WebSocketServer({ noServer: true, perMessageDeflate })
const feed = new WebSocketServer({ noServer: true, perMessageDeflate })
echo.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })))
server.on('upgrade', (req, socket, head) => {
  const wss = req.url === '/echo' ? echo : feed
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
})
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`))
