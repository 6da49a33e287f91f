// permessage-deflate probes: rat-engine beside `ws` on node:http and Bun, each server pinned
// to CPU 0 and this client (the `ws` package, offering permessage-deflate) to CPU 1.
//
//   node bench/ws-deflate/run.mjs fan [subscribers]   a channel's events to N sockets:
//                                                      server CPU per delivery, bytes per event
//   node bench/ws-deflate/run.mjs echo [messages]     50 connections echoing 1 KiB messages:
//                                                      server CPU per message
//   node bench/ws-deflate/run.mjs mem [sockets]       server RSS per socket after one
//                                                      compressed message each (ours)
//
// Bun comes from bench/peers (`cd bench/peers && npm ci`); build first (`npm run build`).
import { spawn, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { nextMessage, EVENTS } from './rows.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const bun = join(here, '..', 'peers', 'node_modules', '.bin', 'bun')
const [what = 'fan', count] = process.argv.slice(2)
const HZ = Number(execFileSync('getconf', ['CLK_TCK']))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const cpuSeconds = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) / HZ
}
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024

/** Starts `who`'s server in `mode` on CPU 0; its pid and port. */
async function start (who, mode) {
  const [cmd, args] = who === 'bun' ? [bun, []] : ['node', []]
  const child = spawn('taskset', ['-c', '0', cmd, ...args, join(here, `server-${who}.mjs`), mode], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { const m = /listening (\d+)/.exec(String(d)); if (m) resolve(Number(m[1])) })
    child.once('exit', (code) => reject(new Error(`${who} exited with ${code}`)))
  })
  // taskset execs the server: the child's pid is the server's.
  return { child, pid: child.pid, port }
}

/** `n` clients on `path`, opened 100 at a time; deflate offered unless `mode` is plain. */
async function clients (port, path, n, mode, onMessage = () => {}) {
  const all = []
  for (let i = 0; i < n; i += 100) {
    all.push(...await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { perMessageDeflate: mode === 'plain' ? false : { threshold: 64 } })
      ws.on('message', (d) => onMessage(ws, d))
      ws.once('open', () => resolve(ws))
      ws.once('error', reject)
    }))))
  }
  return all
}

async function stop (server, socks) {
  for (const s of socks) s.terminate()
  server.child.kill()
  await sleep(300)
}

const runs = {
  async fan (who, mode) {
    const n = Number(count ?? 1000)
    const server = await start(who, mode)
    let got = 0
    let data = 0
    const socks = await clients(server.port, '/feed', n, mode, (_, d) => { got++; data += d.length })
    await sleep(500)
    const wire0 = socks.reduce((a, s) => a + s._socket.bytesRead, 0)
    const cpu0 = cpuSeconds(server.pid)
    await fetch(`http://127.0.0.1:${server.port}/go`)
    const deadline = Date.now() + 60_000
    while (got < n * EVENTS && Date.now() < deadline) await sleep(50)
    const cpu = cpuSeconds(server.pid) - cpu0
    const wire = socks.reduce((a, s) => a + s._socket.bytesRead, 0) - wire0
    await stop(server, socks)
    return `${got}/${n * EVENTS} delivered, server CPU ${(cpu * 1e6 / got).toFixed(2)} µs per delivery, ${Math.round(wire / got)} B per event on the wire (${Math.round(data / got)} B of data)`
  },
  async echo (who, mode) {
    const m = Number(count ?? 400)
    const server = await start(who, mode)
    const socks = await clients(server.port, '/echo', 50, mode)
    const messages = Array.from({ length: 16 }, nextMessage)
    await sleep(300)
    const cpu0 = cpuSeconds(server.pid)
    const t0 = Date.now()
    let wrong = 0
    await Promise.all(socks.map(async (ws) => {
      for (let i = 0; i < m; i++) {
        const back = new Promise((resolve) => ws.once('message', (d) => resolve(String(d))))
        ws.send(messages[i % 16])
        if (await back !== messages[i % 16]) wrong++
      }
    }))
    const cpu = cpuSeconds(server.pid) - cpu0
    const secs = (Date.now() - t0) / 1000
    await stop(server, socks)
    return `${50 * m} echoes (${wrong} wrong) in ${secs.toFixed(1)} s, server CPU ${(cpu * 1e6 / (50 * m)).toFixed(1)} µs per message`
  },
  async mem (who, mode) {
    const n = Number(count ?? 4000)
    const server = await start(who, mode)
    await sleep(500)
    const before = rss(server.pid)
    const message = nextMessage()
    const socks = await clients(server.port, '/echo', n, mode)
    await Promise.all(socks.map((ws) => new Promise((resolve) => { ws.once('message', resolve); ws.send(message) })))
    await sleep(1000)
    const per = Math.round((rss(server.pid) - before) / n)
    await stop(server, socks)
    return `${n} sockets, ${per} B per socket`
  },
}

const plan = {
  fan: ['ours:plain', 'ours:z', 'bun:plain', 'bun:z', 'ws:plain', 'ws:z'],
  echo: ['ours:plain', 'ours:z', 'bun:plain', 'bun:z', 'ws:plain', 'ws:z'],
  mem: ['ours:plain', 'ours:z', 'ours:zc'],
}[what]
if (!plan) throw new Error(`unknown probe ${what}: fan, echo or mem`)
for (const run of plan) {
  const [who, mode] = run.split(':')
  console.log(`${what} ${run}: ${await runs[what](who, mode)}`)
}
