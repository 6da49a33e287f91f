// rat-engine: /echo echoes, /feed is a channel's route, GET /go publishes EVENTS events.
// argv[2]: 'z' for compression, 'zc' for compression with the client's context takeover.
import { createApp } from '../../dist/esm/index.mjs'
import { nextMessage, EVENTS, EVERY_MS } from './rows.mjs'

const mode = process.argv[2]
const compression = mode === 'z' ? true : mode === 'zc' ? { clientContextTakeover: true } : false
const app = createApp({ heartbeatMs: 0 })
const feed = app.channel('feed')
app.ws('/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { compression, idleTimeoutMs: 0 })
app.ws('/feed', feed, { compression, idleTimeoutMs: 0 })
app.get('/go', () => {
  let n = 0
  const t = setInterval(() => {
    feed.publish(nextMessage())
    if (++n === EVENTS) clearInterval(t)
  }, EVERY_MS)
  return 'ok'
})
const { port } = await app.listen({ host: '127.0.0.1', port: 0 })
console.log(`listening ${port}`)
