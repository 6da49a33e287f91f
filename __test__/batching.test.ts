// Writes collected in JS and handed to the engine once per event-loop turn (see FLUSH_AT in
// ts/stream.ts): order across every kind of write, prompt delivery of a lone event, the
// FLUSH_AT bound with a reader that does not read, readiness notices, and writes after
// the end or after the client left.
import { spawn } from 'node:child_process'
import { expect, onTestFinished, test } from 'vitest'
import { BYTES_FLUSH_AT } from '../ts/chunked.js'
import { FLUSH_AT } from '../ts/stream.js'
import { startApp } from './support/app.js'
import { rawRequest } from './support/raw.js'
import { parseSse, RawSseClient } from './support/sse.js'
import { plateau, sleep, waitFor, within } from './support/wait.js'

const HWM = 16 * 1024
const EVENT = 1000 // data characters per event in the paced test
const TOTAL = 20_000 // events: 20 MB, far more than loopback buffers hold

/** A reader in its own process: reads /endless-sync as fast as it can, says when 1 MB came. */
const READER = `
const s = require('node:net').connect(Number(process.argv[1]), '127.0.0.1')
s.write('GET /endless-sync HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n')
let n = 0
s.on('data', (d) => { n += d.length; if (n >= 1 << 20 && n - d.length < 1 << 20) console.log('1MB') })
`

const sentAt = new Map<string, number>()
let paced = { produced: 0, finished: false, readyFalse: 0 }
let afterEnd: { sse: boolean; chunked: boolean } | null = null
let waitOutcome: { rounds: number; ready: boolean | null } | null = null
let stalled: { writes: number; waiting: boolean; stream: { buffered: number } } | null = null
const STALL_WRITES = 512 // 32 MiB in 64 KiB writes

/** `len` bytes counting up from `from` (mod 256): a wrong order or a lost byte shows. */
function pattern(from: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len)
  for (let i = 0; i < len; i++) b[i] = (from + i) & 255
  return b
}

/** Sizes written by /bytes-turn: empty, tiny, around a write's frame, one past the collect
 * limit on its own, and 300 small ones (more buffers than one send takes). */
const TURN_SIZES = [0, 1, 100, 1023, 1024, 5000, 65_536, 200_000, 0, 700_000, ...Array(300).fill(37), 65_536 * 9]

const { port } = await startApp(
  (app) => {
    app.sse('/mixed', (_req, stream) => {
      stream.send('a')
      stream.send({ x: 1 })
      stream.send('b', { event: 'named', id: '7' })
      stream.comment('c')
      stream.send('d\ne')
      stream.writeRaw('event: raw\ndata: f\n\n')
      stream.send('g')
      stream.end()
    })
    app.sse('/lone', (req, stream) => {
      // One event, then nothing for a long time: it must not wait for a later write.
      stream.send('only')
      sentAt.set(req.query.key as string, Date.now())
      const timer = setTimeout(() => stream.end(), 10_000)
      stream.onClose(() => clearTimeout(timer))
    })
    app.sse('/paced', async function* () {
      paced = { produced: 0, finished: false, readyFalse: 0 }
      for (let i = 0; i < TOTAL; i++) {
        paced.produced++
        yield `${String(i).padStart(8, '0')}${'.'.repeat(EVENT - 8)}`
      }
      paced.finished = true
    })
    app.sse('/nul', (_req, stream) => {
      stream.send('a')
      stream.send('b\0c')
      stream.send('')
      stream.send('d')
      stream.end()
    })
    app.sse('/undefined', function* () {
      yield 'first'
      yield undefined
    })
    app.sse('/after-end', (_req, stream) => {
      stream.send('x')
      stream.end()
      afterEnd = { sse: stream.send('late'), chunked: false }
    })
    app.chunked('/after-end-chunked', (_req, stream) => {
      stream.write('x')
      stream.end()
      afterEnd = { sse: afterEnd?.sse ?? false, chunked: stream.write('late') }
    })
    app.chunked('/mixed-chunked', (_req, stream) => {
      stream.write('a')
      stream.write(Buffer.from('B'))
      stream.write('c')
      stream.write(new Uint8Array([68])) // 'D'
      stream.write('e')
      stream.end()
    })
    app.chunked('/bytes-turn', (_req, stream) => {
      let at = 0
      TURN_SIZES.forEach((n, i) => {
        stream.write(pattern(at, n))
        at += n
        if (i % 50 === 3) {
          stream.write(`<${i}>`)
          at = 0
        }
      })
      stream.end()
    })
    // Async, and still running after the write: only the end-of-turn flush can send it.
    app.chunked('/lone-bytes', async (req, stream) => {
      stream.write(Buffer.from('only'))
      sentAt.set(req.query.key as string, Date.now())
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000)
        stream.onClose(() => (clearTimeout(timer), resolve()))
      })
      stream.end()
    })
    // Writes 64 KiB blocks as long as write() says yes, then waits in ready(); 32 MiB.
    app.chunked('/stall-bytes', async (_req, stream) => {
      const state = { writes: 0, waiting: false, stream }
      stalled = state
      const block = Buffer.alloc(64 * 1024, 'q')
      while (state.writes < STALL_WRITES) {
        while (state.writes < STALL_WRITES && stream.write(block)) state.writes++
        if (state.writes === STALL_WRITES) break
        state.writes++ // the write that said "wait" was taken too
        state.waiting = true
        const ok = await stream.ready()
        state.waiting = false
        if (!ok) return
      }
      stream.end()
    })
    app.post('/echo', (req) => ({ n: req.body.length, path: req.path }))
    app.sse('/held', async (req, stream) => {
      // Answers after the plain requests of its batch are done: it owns its request.
      await sleep(50)
      stream.send({ key: req.query.key, ua: req.header('x-key') })
      stream.end()
    })
    app.ndjson('/ndjson', (_req, stream) => {
      for (let i = 0; i < 3; i++) stream.write({ i })
      stream.end()
    })
    // Fills the queue against a reader that never reads, then waits; the client leaves.
    app.chunked('/wait-then-leave', async (_req, stream) => {
      const state: { rounds: number; ready: boolean | null } = { rounds: 0, ready: null }
      waitOutcome = state
      const block = Buffer.alloc(64 * 1024, 'z')
      // Until the kernel's buffers are full too and ready() stays pending.
      for (;;) {
        while (stream.write(block));
        state.rounds++
        if (!(await stream.ready())) break
      }
      state.ready = false
    })
  },
  { highWaterMark: HWM },
)

test('an SSE stream keeps the order of every kind of write made in one turn', async () => {
  const res = await fetch(`http://127.0.0.1:${port}/mixed`)
  expect(await res.text()).toBe(
    'data: a\n\ndata: {"x":1}\n\nevent: named\nid: 7\ndata: b\n\n: c\n\ndata: d\ndata: e\n\nevent: raw\ndata: f\n\ndata: g\n\n',
  )
})

test('data holding NUL is sent as is (the batch crosses as an array then)', async () => {
  const res = await fetch(`http://127.0.0.1:${port}/nul`)
  expect(await res.text()).toBe('data: a\n\ndata: b\0c\n\ndata:\n\ndata: d\n\n')
})

test('an endless synchronous generator does not hold the JS thread', async () => {
  // Default queue limits, and a generator that never waits on its own and is slower than
  // the reader (20 µs of work per event): the queue rarely fills, so backpressure alone
  // would hold the JS thread for seconds; pump's periodic yield lets other work run.
  const { port } = await startApp((app) => {
    app.sse('/endless-sync', function* () {
      for (let i = 0; ; i++) {
        const until = performance.now() + 0.02
        while (performance.now() < until);
        yield String(i).padStart(100, '.')
      }
    })
    app.get('/ping', () => 'pong')
  })
  // The reader runs in another process, so it drains the stream while this thread is busy.
  const reader = spawn(process.execPath, ['-e', READER, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] })
  onTestFinished(() => void reader.kill())
  let reported = ''
  reader.stdout.on('data', (d: Buffer) => (reported += d.toString()))
  await waitFor('the reader to get 1 MB', () => reported.includes('1MB'), { timeoutMs: 20_000 })
  // Timers keep firing on time while the generator runs (it yields every 1024 items,
  // about 20 ms of its work here).
  let worst = 0
  for (let i = 0; i < 20; i++) {
    const t = Date.now()
    await sleep(10)
    worst = Math.max(worst, Date.now() - t - 10)
  }
  expect(worst).toBeLessThan(300)
  const started = Date.now()
  const res = await fetch(`http://127.0.0.1:${port}/ping`)
  expect(await res.text()).toBe('pong')
  expect(Date.now() - started).toBeLessThan(1000)
})

test('a value that is not JSON ends the stream with an error event after what was sent', async () => {
  const res = await fetch(`http://127.0.0.1:${port}/undefined`)
  const events = parseSse(await res.text())
  expect(events.map((e) => e.event ?? 'message')).toEqual(['message', 'error'])
  expect(events[0].data).toBe('first')
  expect(JSON.parse(events[1].data).error).toMatch(/JSON-serializable, not undefined/)
})

test('a chunked stream keeps the order of strings and bytes', async () => {
  const res = await fetch(`http://127.0.0.1:${port}/mixed-chunked`)
  expect(await res.text()).toBe('aBcDe')
  const nd = await fetch(`http://127.0.0.1:${port}/ndjson`)
  expect(await nd.text()).toBe('{"i":0}\n{"i":1}\n{"i":2}\n')
})

test('bytes written in one turn keep their order and every byte, whatever their sizes', async () => {
  let expected = Buffer.alloc(0)
  let at = 0
  TURN_SIZES.forEach((n, i) => {
    expected = Buffer.concat([expected, pattern(at, n)])
    at += n
    if (i % 50 === 3) {
      expected = Buffer.concat([expected, Buffer.from(`<${i}>`)])
      at = 0
    }
  })
  const res = await fetch(`http://127.0.0.1:${port}/bytes-turn`)
  const body = Buffer.from(await res.arrayBuffer())
  expect(body.length).toBe(expected.length)
  expect(body.equals(expected)).toBe(true)
})

test('a lone buffer goes out in the same turn, without waiting for more writes', async () => {
  const client = rawRequest(port, '/lone-bytes?key=lone-bytes')
  await client.head
  await waitFor('the bytes', () => client.body().includes('only'), { timeoutMs: 3000 })
  expect(Date.now() - sentAt.get('lone-bytes')!).toBeLessThan(1000)
  client.destroy()
})

test('collected bytes add at most one batch to the queue when the client does not read', async () => {
  const client = rawRequest(port, '/stall-bytes', { pauseAfterHead: true })
  await client.head
  const state = await waitFor('the writer to start', () => stalled, { timeoutMs: 10_000 })
  await plateau('the writer to stall', () => state.writes, { quietMs: 300 })
  expect(state.waiting).toBe(true)
  expect(state.writes).toBeLessThan(STALL_WRITES)
  // What the kernel did not take: past the mark by at most one collected batch (and the
  // chunk header and CRLF of the batch that found the socket full).
  const queued = state.stream.buffered
  expect(queued).toBeGreaterThan(0)
  expect(queued).toBeLessThanOrEqual(HWM + BYTES_FLUSH_AT + 16)
  client.resume()
  expect(await within(15_000, 'the whole stream', client.ended)).toBe('complete')
  const body = client.body()
  expect(body.length).toBe(STALL_WRITES * 64 * 1024)
  expect(body.every((b) => b === 113)).toBe(true) // 'q'
  client.destroy()
})

test('a lone event goes out in the same turn, without waiting for more writes', async () => {
  const client = new RawSseClient(port, '/lone?key=lone')
  const [event] = await client.waitForEvents(1, 3000)
  const latency = Date.now() - sentAt.get('lone')!
  expect(event.data).toBe('only')
  // Far below the 10 s the handler waits before its next write.
  expect(latency).toBeLessThan(1000)
  client.destroy()
})

test('collected events stay bounded by FLUSH_AT plus the mark when the client does not read', async () => {
  const client = rawRequest(port, '/paced', { pauseAfterHead: true })
  await client.head
  const last = await plateau('the generator to stall', () => paced.produced)
  expect(paced.finished).toBe(false)
  // What the kernel holds plus the engine's queue plus one JS batch: far from all of it.
  expect(paced.produced).toBeLessThan(TOTAL / 2)
  await sleep(300)
  expect(paced.produced).toBe(last)
  client.resume()
  expect(await within(15_000, 'the whole stream', client.ended)).toBe('complete')
  const events = parseSse(client.body())
  expect(events).toHaveLength(TOTAL)
  events.forEach((e, i) => {
    if (!e.data.startsWith(String(i).padStart(8, '0')) || e.data.length !== EVENT) throw new Error(`event ${i} is wrong`)
  })
  expect(FLUSH_AT).toBeLessThanOrEqual(64 * 1024)
  client.destroy()
})

test('writes after end() return false and send nothing', async () => {
  expect(await (await fetch(`http://127.0.0.1:${port}/after-end`)).text()).toBe('data: x\n\n')
  expect(await (await fetch(`http://127.0.0.1:${port}/after-end-chunked`)).text()).toBe('x')
  expect(afterEnd).toEqual({ sse: false, chunked: false })
})

test('a stream waiting in ready() learns that the client left: ready resolves false', async () => {
  const client = rawRequest(port, '/wait-then-leave', { pauseAfterHead: true })
  await client.head
  const state = await waitFor('the writer to start', () => waitOutcome, { timeoutMs: 10_000 })
  await plateau('the writer to wait in ready()', () => state.rounds, { quietMs: 300 })
  expect(state.ready).toBe(null)
  const left = Date.now()
  client.destroy()
  await waitFor('ready() to resolve', () => state.ready !== null, { timeoutMs: 3000 })
  expect(state.ready).toBe(false)
  expect(Date.now() - left).toBeLessThan(1000)
})

test('requests that arrive together: streams and plain requests each keep their own request', async () => {
  // Sent at once, they cross to JS in few dispatch batches; each stream moves its request
  // out of its batch (Calls.detach) and must still read it after the others finished.
  const body = 'x'.repeat(10_000)
  const plain = Array.from({ length: 20 }, (_, i) =>
    fetch(`http://127.0.0.1:${port}/echo?i=${i}`, { method: 'POST', body: body.slice(i) }).then((r) => r.json()),
  )
  const streams = Array.from({ length: 10 }, (_, i) =>
    fetch(`http://127.0.0.1:${port}/held?key=k${i}`, { headers: { 'x-key': `h${i}` } }).then((r) => r.text()),
  )
  const answers = await within(10_000, 'the plain answers', Promise.all(plain))
  answers.forEach((a, i) => expect(a).toEqual({ n: 10_000 - i, path: '/echo' }))
  const texts = await within(10_000, 'the streams', Promise.all(streams))
  texts.forEach((t, i) => expect(parseSse(t).map((e) => JSON.parse(e.data))).toEqual([{ key: `k${i}`, ua: `h${i}` }]))
})
