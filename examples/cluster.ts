// Several processes on one port, one channel shared through Redis: node:cluster starts
// WORKERS workers (default 2), each listening on PORT with reusePort (the kernel spreads
// connections), each publishing a tick to the shared `ticker` channel every 2 s and any
// chat message it receives. Every page shows the worker that served it and the events of
// all workers; reload to land on another worker, and its stream resumes where it was.
//
// Run: redis-server on 127.0.0.1:6379 (or REDIS_URL), then `npx tsx examples/cluster.ts`.
import cluster from 'node:cluster'
import { createApp, HttpError, type App } from '../ts/index.js'

const page = (worker: string) => `<!doctype html>
<meta charset="utf-8"><title>rat-engine cluster</title>
<h1>Served by worker ${worker}</h1>
<p>This stream: <span id="state">connecting</span>. Reload to be served by another worker.</p>
<form id="say"><input id="text" placeholder="say something" autocomplete="off"> <button>send</button></form>
<ol id="events" reversed></ol>
<script>
const es = new EventSource('/ticker')
const list = document.getElementById('events')
es.onopen = () => (document.getElementById('state').textContent = 'open')
es.onerror = () => (document.getElementById('state').textContent = 'reconnecting')
es.onmessage = (e) => {
  const m = JSON.parse(e.data)
  const li = document.createElement('li')
  li.textContent = (m.text ? 'worker ' + m.worker + ' says ' + m.text : 'tick ' + m.tick + ' from worker ' + m.worker) + '  (id ' + e.lastEventId + ')'
  list.prepend(li)
}
document.getElementById('say').onsubmit = async (ev) => {
  ev.preventDefault()
  const text = document.getElementById('text')
  await fetch('/say?text=' + encodeURIComponent(text.value), { method: 'POST' })
  text.value = ''
}
</script>`

/** One worker's app: the page, the shared `ticker` channel, and `POST /say`. */
export function createClusterWorker(redisUrl: string, worker: string): { app: App; stop: () => void } {
  const app = createApp({ redis: redisUrl })
  const ticker = app.channel('ticker', { history: 100 })
  app.html('/', page(worker))
  app.sse('/ticker', ticker)
  app.post('/say', async (req) => {
    const text = typeof req.query.text === 'string' ? req.query.text.slice(0, 200) : ''
    if (text === '') throw new HttpError(400, 'text is required')
    return { id: await ticker.publishAsync({ worker, text }) }
  })
  let tick = 0
  const timer = setInterval(() => ticker.publish({ worker, tick: ++tick }), 2000)
  return { app, stop: () => clearInterval(timer) }
}

async function main() {
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0'
  const port = process.env.PORT ? Number(process.env.PORT) : 8080
  if (cluster.isPrimary) {
    const workers = Number(process.env.WORKERS ?? 2)
    for (let i = 0; i < workers; i++) cluster.fork()
    cluster.on('exit', (w, code) => console.log(`worker ${w.id} exited (${code})`))
    return
  }
  const id = `${cluster.worker!.id} (pid ${process.pid})`
  const { app, stop } = createClusterWorker(redisUrl, id)
  try {
    await app.listen({ host: process.env.HOST || '127.0.0.1', port, reusePort: true })
  } catch (err) {
    console.error(`worker ${id}: ${(err as Error).message}`)
    process.exit(1)
  }
  console.log(`worker ${id} listening on http://127.0.0.1:${port}/`)
  process.once('SIGTERM', () => {
    stop()
    void app.close(2000).then(() => process.exit(0))
  })
}

if (require.main === module) void main()
