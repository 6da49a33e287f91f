// One process's publish rate through Redis against a local channel, measured in the same
// run: SUBS raw SSE subscribers on the process, EVENTS published in one burst (publish,
// with a publishAsync every 2,000 as the only pacing), timed until every subscriber was
// handed every event (channel metrics: delivered = EVENTS x SUBS). Starts its own
// redis-server on a free port. Prints the rates and their ratio; writes nothing.
//
// Run: npm run build && node bench/redis.mjs [--events 200000] [--subs 10]
import { spawn } from 'node:child_process'
import net from 'node:net'
import { parseArgs } from 'node:util'
import { createApp } from '../dist/index.js'

const { values } = parseArgs({ options: { events: { type: 'string', default: '200000' }, subs: { type: 'string', default: '10' } } })
const EVENTS = Number(values.events)
const SUBS = Number(values.subs)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function freePort() {
  const srv = net.createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address()
  await new Promise((r) => srv.close(r))
  return port
}

async function run(url, shared) {
  const app = createApp({ heartbeatMs: 0, redis: { url, keyPrefix: `bench:${Date.now()}:` } })
  const ch = app.channel('x', { redis: shared })
  app.sse('/x', ch)
  const { port } = await app.listen({ port: 0 })
  const socks = []
  for (let i = 0; i < SUBS; i++) {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET /x HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n'))
    s.on('data', () => {})
    socks.push(s)
  }
  for (let i = 0; i < 500 && ch.subscribers < SUBS; i++) await sleep(10)
  const t0 = performance.now()
  for (let i = 0; i < EVENTS; i++) {
    if (i % 2000 === 1999) await ch.publishAsync(`{"i":${i}}`)
    else ch.publish(`{"i":${i}}`)
  }
  const deadline = Date.now() + 120_000
  while (ch.metrics().delivered < EVENTS * SUBS && Date.now() < deadline) await sleep(2)
  const seconds = (performance.now() - t0) / 1000
  const m = ch.metrics()
  for (const s of socks) s.destroy()
  await app.close(100)
  if (m.delivered < EVENTS * SUBS) throw new Error(`${shared ? 'redis' : 'local'}: ${m.delivered} of ${EVENTS * SUBS} delivered in 120 s`)
  return EVENTS / seconds
}

const port = await freePort()
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
try {
  for (let i = 0; i < 500; i++) {
    const up = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)))
      s.on('error', () => r(false))
    })
    if (up) break
    await sleep(20)
  }
  const url = `redis://127.0.0.1:${port}/0`
  const local = await run(url, false)
  const shared = await run(url, true)
  console.log(`${EVENTS} events, ${SUBS} subscribers, every one received every event`)
  console.log(`local channel: ${Math.round(local)} events/s; through Redis: ${Math.round(shared)} events/s; ratio ${(shared / local).toFixed(2)}`)
} finally {
  redis.kill('SIGKILL')
}
