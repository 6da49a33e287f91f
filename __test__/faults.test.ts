// Faults around JS, on a server in its own process (fixtures/soak-server.mts): an event
// loop blocked for 5 s (Rust keeps heartbeats and channel replays flowing; plain requests
// are answered after), the access log bounded while JS is blocked, a flood of connections,
// and the open-file limit reached (accept backs off instead of spinning, and works again
// once descriptors are free).
//
// Handlers that throw, reject, return what JSON cannot encode (a BigInt...) or generators
// that throw midway are in errors.test.ts. CI-sized; RAT_SCALE=full floods 19,000
// connections.
import { connect } from 'node:net'
import { fetch } from 'undici'
import { beforeAll, expect, test } from 'vitest'
import { ratBench, runBench, startServer } from '../scripts/soak/lib.mjs'
import { scale } from './support/scale.js'
import { RawSseClient, type SseMessage } from './support/sse.js'
import { sleep, waitFor, within } from './support/wait.js'

let bin = ''
beforeAll(() => {
  bin = ratBench()
}, 300_000)

const num = (id: string) => Number(id.slice(id.lastIndexOf('-') + 1))

test('an event loop blocked for 5 s: heartbeats and channel replays flow from Rust, plain requests are answered after', async () => {
  const server = await startServer({ args: ['--rate', '20', '--heartbeat-ms', '200'] })
  try {
    const { port } = server
    const idle = new RawSseClient(port, '/idle')
    const idleArrivals: number[] = []
    idle.onBody(() => idleArrivals.push(Date.now()))
    const live = new RawSseClient(port, '/soak/channel')
    await live.waitForEvents(10)
    const resumeFrom = live.events[2].id
    const blocking = server.printed('blocking')
    const blocked = fetch(`http://127.0.0.1:${port}/block?ms=5000`).then(async (r) => ({ at: Date.now(), text: await r.text() }))
    const t0 = await within(5000, 'the handler to start blocking', blocking)

    await sleep(500)
    const plain = fetch(`http://127.0.0.1:${port}/hello`).then(async (r) => ({ at: Date.now(), text: await r.text() }))
    // A subscriber resuming during the block gets what it missed from history: no JS.
    const resumed = new RawSseClient(port, '/soak/channel', { headers: { 'last-event-id': resumeFrom } })
    const replay = await within(1500, 'the replay during the block', resumed.waitForEvents(5))
    const replayedAt = Date.now()
    const published = num(live.events.at(-1)!.id)
    expect(replay.map((e) => num(e.id))).toEqual(Array.from({ length: replay.length }, (_, i) => num(resumeFrom) + 1 + i))
    const { at: unblockedAt, text } = await within(10_000, '/block', blocked)
    expect(text).toBe('unblocked')

    console.log(`block: ${unblockedAt - t0} ms blocked; replay of ${replay.length} events after ${replayedAt - t0} ms; ${idleArrivals.filter((t) => t > t0 && t < unblockedAt).length} heartbeats meanwhile`)
    expect(unblockedAt - t0).toBeGreaterThanOrEqual(4900)
    expect(replayedAt).toBeLessThan(unblockedAt)
    // Heartbeats every 200 ms on the idle stream all through the block.
    const during = idleArrivals.filter((t) => t > t0 + 250 && t < t0 + 4750)
    expect(during.length).toBeGreaterThanOrEqual(15)
    // The plain request waited for the JS thread, then got its answer.
    const answered = await within(5000, '/hello after the block', plain)
    expect(answered.text).toBe('hello')
    expect(answered.at).toBeGreaterThanOrEqual(unblockedAt - 100)
    // Publishing resumes after the block; the live subscriber saw no gap.
    await waitFor('publishes after the block', () => num(live.events.at(-1)!.id) > published + 5, { timeoutMs: 5000 })
    const ids = live.events.map((e: SseMessage) => num(e.id))
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => ids[0] + i))
    for (const c of [idle, live, resumed]) c.destroy()
  } finally {
    await server.stop()
  }
}, 30_000)

/** Sends `n` pipelined GETs of `path` on one connection; resolves with the count of 404s. */
function pipelined404s(port: number, path: string, n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const marker = 'HTTP/1.1 404 '
    const socket = connect(port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`.repeat(n)))
    socket.setEncoding('latin1')
    let seen = 0
    let tail = ''
    socket.on('data', (chunk: string) => {
      const text = tail + chunk
      for (let i = text.indexOf(marker); i !== -1; i = text.indexOf(marker, i + 1)) seen++
      tail = text.slice(-(marker.length - 1))
      if (seen >= n) {
        socket.destroy()
        resolve(seen)
      }
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(seen))
  })
}

test('an event loop blocked while the engine answers alone: at most 8,192 access log entries wait for JS, and the logger is told how many were dropped', async () => {
  const server = await startServer({ args: ['--access-log'] })
  try {
    const { port } = server
    const blocking = server.printed('blocking')
    let unblocked = false
    const blocked = fetch(`http://127.0.0.1:${port}/block?ms=4000`).then(async (r) => {
      const text = await r.text()
      unblocked = true
      return text
    })
    await within(5000, 'the handler to start blocking', blocking)
    // Answered by the engine alone (no route): 16,000 entries for a JS thread that is held.
    const conns = 8
    const per = 2000
    const answered = await within(3500, '404s during the block', Promise.all(Array.from({ length: conns }, () => pipelined404s(port, '/missing', per))))
    expect(answered).toEqual(Array(conns).fill(per))
    expect(unblocked).toBe(false)
    expect(await within(10_000, '/block', blocked)).toBe('unblocked')

    // Every entry is logged or counted: the 404s, and /block's own (made once its response
    // is over, which can be before JS takes the full batch: then it is dropped too).
    const total = conns * per
    const accounted = (m: { logs: { byPath: Record<string, number>; dropped: number } }) => (m.logs.byPath['/missing'] ?? 0) + (m.logs.byPath['/block'] ?? 0) + m.logs.dropped
    const m = await waitFor(
      'the access log after the block',
      async () => {
        const m = await server.metrics()
        return accounted(m) >= total + 1 ? m : null
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    )
    console.log(`access log: ${m.logs.byPath['/missing']} entries kept and ${m.logs.dropped} dropped of ${total} made during a block`)
    expect(m.logs.byPath['/missing']).toBe(8192)
    expect(accounted(m)).toBe(total + 1)
    expect(m.logs.warnings).toEqual([])
    // Entries flow again once JS keeps up.
    expect((await fetch(`http://127.0.0.1:${port}/hello`)).status).toBe(200)
    await waitFor('the entry of /hello', async () => (await server.metrics()).logs.byPath['/hello'] === 1, { timeoutMs: 5000, intervalMs: 50 })
  } finally {
    await server.stop()
  }
}, 30_000)

test('a flood of connections: every subscriber and request is served, then all is released', async () => {
  const n = scale(2000, 19_000)
  const server = await startServer({ args: ['--rate', '5'] })
  try {
    const addr = `127.0.0.1:${server.port}`
    // All at once, no ramp: the listen backlog and accept take the burst.
    const subs = await runBench(bin, ['idle', '--addr', addr, '--path', '/soak/channel', '--connections', String(n), '--connect-concurrency', String(n), '--connect-timeout', '60', '--warmup', '0', '--duration', '1'])
    expect([subs.connected, subs.connect_failed, subs.lost]).toEqual([n, 0, 0])
    // As many keep-alive connections sending requests, all connecting at once (the warm-up
    // covers the connects that wait for a SYN retry when the backlog overflows).
    const plain = await runBench(bin, ['hello', '--addr', addr, '--path', '/hello', '--expect', 'hello', '--connections', String(n), '--warmup', String(scale(1, 15)), '--duration', '2'])
    console.log(`flood: ${subs.connected}/${n} subscribers in ${subs.connect_s} s; ${plain.requests} requests on ${n} connections in ${plain.duration_s} s, ${plain.errors} errors`)
    expect(plain.errors).toBe(0)
    expect(plain.requests).toBeGreaterThan(n)
    await waitFor(
      'connections and subscribers released',
      async () => {
        const m = await server.metrics()
        return m.metrics.activeConnections === 0 && m.channels.soak.subscribers === 0
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    )
    expect(server.proc.exitCode).toBeNull()
    expect(await (await fetch(`http://${addr}/hello`)).text()).toBe('hello')
  } finally {
    await server.stop()
  }
}, scale(60_000, 300_000))

test('at the open-file limit accept backs off (CPU stays low) and works again once descriptors are free', async () => {
  const limit = 256
  const server = await startServer({ args: ['--rate', '1'], nofile: limit })
  try {
    const addr = `127.0.0.1:${server.port}`
    let atLimit: { cpuS: number; at: number } | null = null
    let released: { cpuS: number; at: number } | null = null
    // More subscribers than descriptors: the rest wait in the listen backlog.
    const held = await runBench(bin, ['idle', '--addr', addr, '--path', '/idle', '--connections', String(2 * limit), '--connect-concurrency', String(2 * limit), '--connect-timeout', '2', '--warmup', '0', '--duration', '3'], (marker) => {
      if (marker === 'measure-start') atLimit = server.sample()
      if (marker === 'measure-end') released = server.sample()
    })
    expect(held.connected).toBeGreaterThan(limit / 2)
    expect(held.connected).toBeLessThan(limit)
    const a = atLimit as { cpuS: number; at: number } | null
    const b = released as { cpuS: number; at: number } | null
    expect(a && b).toBeTruthy()
    const cpuShare = (b!.cpuS - a!.cpuS) / ((b!.at - a!.at) / 1000)
    console.log(`fd limit: ${held.connected} of ${2 * limit} accepted at a limit of ${limit}; server CPU ${(cpuShare * 100).toFixed(1)}% of a core meanwhile`)
    // A loop retrying accept without a pause would take a whole core.
    expect(cpuShare).toBeLessThan(0.15)
    // The client is gone: accept works again.
    const res = await within(5000, '/hello after the limit', fetch(`http://${addr}/hello`))
    expect(await res.text()).toBe('hello')
    expect(server.proc.exitCode).toBeNull()
  } finally {
    await server.stop()
  }
}, 60_000)
