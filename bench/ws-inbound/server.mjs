// A WebSocket route whose message handler takes 2 ms of the event loop per message
// (see run.mjs). Prints `listening <port>`.
import { createApp } from '../../dist/esm/index.mjs'

const app = createApp()
app.ws(
  '/slow',
  {
    message() {
      const until = Date.now() + 2
      while (Date.now() < until) {}
    },
  },
  { idleTimeoutMs: 0 },
)
const { port } = await app.listen({ host: '127.0.0.1', port: 0 })
console.log(`listening ${port}`)
