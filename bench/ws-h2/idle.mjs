// Idle WebSockets over HTTP/2 (RFC 8441, h2c with prior knowledge, 190 per connection)
// against over HTTP/1.1: rat-engine's server RSS per socket, two rounds each.
//
//   node bench/ws-h2/idle.mjs [sockets]      (build first: npm run build)
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import http2 from 'node:http2'
import net from 'node:net'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const N = Number(process.argv[2] ?? 10000)
for (const mode of ['h2', 'h1', 'h2', 'h1']) {
  const child = spawn('node', [`${here}/../ws-deflate/server-ours.mjs`, 'plain'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise((r) => child.stdout.on('data', (d) => { const m = /listening (\d+)/.exec(String(d)); if (m) r(Number(m[1])) }))
  await sleep(500)
  const before = rss(child.pid)
  const keep = []
  if (mode === 'h2') {
    const perConn = 190
    for (let c = 0; c < Math.ceil(N / perConn); c++) {
      const session = http2.connect(`http://127.0.0.1:${port}`)
      await new Promise((r) => session.once('remoteSettings', r))
      if (!session.remoteSettings.enableConnectProtocol) throw new Error('no extended CONNECT')
      const n = Math.min(perConn, N - c * perConn)
      await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
        const s = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/echo', ':scheme': 'http', ':authority': `127.0.0.1:${port}`, 'sec-websocket-version': '13' })
        s.once('response', (h) => (h[':status'] === 200 ? resolve() : reject(new Error(String(h[':status'])))))
        s.once('error', reject)
        keep.push(s)
      })))
      keep.push(session)
    }
  } else {
    for (let i = 0; i < N; i += 200) {
      await Promise.all(Array.from({ length: Math.min(200, N - i) }, () => new Promise((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => s.write('GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'))
        s.once('data', (d) => (String(d).startsWith('HTTP/1.1 101') ? resolve() : reject(new Error(String(d)))))
        s.once('error', reject)
        keep.push(s)
      })))
    }
  }
  await sleep(1500)
  console.log(`${mode}: ${N} idle sockets, ${Math.round((rss(child.pid) - before) / N)} B per socket`)
  for (const k of keep) k.destroy?.()
  child.kill()
  await sleep(500)
}
process.exit(0)
