// One client sending 64 KiB messages as fast as its socket takes them, for 4 s, to a
// handler that takes 2 ms each: the server's RSS each second. The server stops reading
// while 1 MiB of a socket's messages wait for JS (docs/websocket.md, "Receiving"), so its
// RSS stays flat and the client is slowed by TCP.
//
//   node bench/ws-inbound/run.mjs      (build first: npm run build)
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'

const here = dirname(fileURLToPath(import.meta.url))
const rssMiB = (pid) => Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024)
const child = spawn(process.execPath, [`${here}/server.mjs`], { stdio: ['ignore', 'pipe', 'inherit'] })
const port = await new Promise((resolve) => child.stdout.on('data', (d) => {
  const m = /listening (\d+)/.exec(String(d))
  if (m) resolve(Number(m[1]))
}))
const ws = new WebSocket(`ws://127.0.0.1:${port}/slow`)
await new Promise((resolve, reject) => {
  ws.once('open', resolve)
  ws.once('error', reject)
})
const chunk = Buffer.alloc(64 << 10, 7)
let sent = 0
const end = Date.now() + 4000
const samples = setInterval(() => console.log(`server RSS ${rssMiB(child.pid)} MiB, ${sent} messages sent`), 1000)
await new Promise((resolve) => {
  const pump = () => {
    while (ws.bufferedAmount < 1 << 20 && Date.now() < end) {
      ws.send(chunk)
      sent++
    }
    if (Date.now() < end) setImmediate(pump)
    else resolve()
  }
  pump()
})
await new Promise((resolve) => setTimeout(resolve, 1100))
clearInterval(samples)
console.log(`sent ${sent} messages (${Math.round(sent / 16)} MiB) in 4 s; server RSS ${rssMiB(child.pid)} MiB`)
ws.terminate()
child.kill()
