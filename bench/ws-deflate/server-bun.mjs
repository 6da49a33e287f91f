// Bun.serve with perMessageDeflate; echoes are sent with compress = true (Bun's send does
// not compress unless asked), a broadcast is server.publish.
import { nextMessage, EVENTS, EVERY_MS } from './rows.mjs'

const z = process.argv[2] !== 'plain'
const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch (req, srv) {
    const path = new URL(req.url).pathname
    if (path === '/echo' || path === '/feed') return srv.upgrade(req, { data: path }) ? undefined : new Response('no', { status: 400 })
    let n = 0
    const t = setInterval(() => {
      srv.publish('feed', nextMessage())
      if (++n === EVENTS) clearInterval(t)
    }, EVERY_MS)
    return new Response('ok')
  },
  websocket: {
    idleTimeout: 0,
    perMessageDeflate: z,
    open (ws) { if (ws.data === '/feed') ws.subscribe('feed') },
    message (ws, data) { ws.send(data, z) },
  },
})
console.log(`listening ${server.port}`)
