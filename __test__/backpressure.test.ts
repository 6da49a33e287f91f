// Backpressure end to end: a raw client reads the head and then stops reading while the
// handler writes as fast as write()/ready() allow. The engine's queue must stay at the
// high-water mark (plus at most one chunk), the producer must stall instead of running
// ahead, and once the client reads again every byte must arrive, in order.
import { describe, expect, test } from 'vitest'
import { sseEvent, type BaseStream } from '../ts/index.js'
import { startApp } from './support/app.js'
import { rawRequest } from './support/raw.js'
import { parseSse } from './support/sse.js'
import { plateau, sleep, waitFor, within } from './support/wait.js'

const HWM = 16 * 1024
const CHUNK = 4096
// Well past what the kernel buffers of a loopback connection can absorb (a few MB).
const TOTAL = 4096 // chunks: 16 MiB

/** Chunk `i`: its number, padded, then filler, then a newline; exactly CHUNK bytes. */
const chunk = (i: number) => `${String(i).padStart(8, '0')}${'.'.repeat(CHUNK - 9)}\n`

/** Checks that `body` is chunks 0..n-1 in order. */
function expectInOrder(body: Buffer, n: number) {
  expect(body.length).toBe(n * CHUNK)
  for (let i = 0; i < n; i++) {
    const at = i * CHUNK
    if (body.toString('latin1', at, at + 8) !== String(i).padStart(8, '0') || body[at + CHUNK - 1] !== 10) {
      throw new Error(`chunk ${i} is not where it should be (byte ${at})`)
    }
  }
}

interface Producer {
  produced: number
  maxBuffered: number
  finished: boolean
}
const producers = new Map<string, Producer>()
function producer(key: string): Producer {
  const p = { produced: 0, maxBuffered: 0, finished: false }
  producers.set(key, p)
  return p
}
const observe = (p: Producer, stream: BaseStream) => {
  p.maxBuffered = Math.max(p.maxBuffered, stream.buffered)
}

let ignoring: { writes: number; falseAt: number; closed: boolean; buffered: number[] } | null = null

const { port } = await startApp(
  (app) => {
    app.chunked('/write-ready', async (req, stream) => {
      const p = producer(req.query.key as string)
      for (let i = 0; i < TOTAL; i++) {
        p.produced++
        const below = stream.write(chunk(i))
        observe(p, stream)
        if (!below && !(await stream.ready())) return
      }
      p.finished = true
      stream.end()
    })
    app.chunked('/generator', async function* (req, stream) {
      const p = producer(req.query.key as string)
      for (let i = 0; i < TOTAL; i++) {
        observe(p, stream)
        p.produced++
        yield chunk(i)
      }
      p.finished = true
    })
    app.sse('/sse', async function* (req, stream) {
      const p = producer(req.query.key as string)
      for (let i = 0; i < TOTAL; i++) {
        observe(p, stream)
        p.produced++
        yield sseEvent(chunk(i).slice(0, -1), { id: i })
      }
      p.finished = true
    })
    // Writes without ever waiting: the engine must cut the stream at its hard limit.
    app.chunked('/ignores-backpressure', (_req, stream) => {
      const state = { writes: 0, falseAt: -1, closed: false, buffered: [] as number[] }
      ignoring = state
      for (let i = 0; i < TOTAL; i++) {
        const below = stream.write(chunk(i))
        state.writes++
        state.buffered.push(stream.buffered)
        if (!below && state.falseAt < 0) state.falseAt = i
        if (stream.closed) break
      }
      state.closed = stream.closed
    })
  },
  { highWaterMark: HWM, maxBufferedBytes: 1024 * 1024 },
)

/** Waits until `p.produced` has not moved for 400 ms; returns the plateau. */
const stalled = (p: Producer) => plateau('the producer to stall', () => p.produced)

describe.each([
  ['write()/ready()', '/write-ready'],
  ['an async generator', '/generator'],
])('a paused reader with %s', (_name, path) => {
  test('keeps the queue at the mark, stalls the producer, then delivers everything in order', async () => {
    const key = `${path}-1`
    const client = rawRequest(port, `${path}?key=${key}`, { pauseAfterHead: true })
    expect((await client.head).status).toBe(200)
    const p = await waitFor('the handler to start', () => producers.get(key))
    const stalledAt = await stalled(p)
    // Stalled well before the end: the producer is paced by the client.
    expect(p.finished).toBe(false)
    expect(stalledAt).toBeLessThan(TOTAL / 2)
    // It stays stalled.
    await sleep(300)
    expect(p.produced).toBe(stalledAt)
    expect(p.maxBuffered).toBeGreaterThan(0)
    expect(p.maxBuffered).toBeLessThanOrEqual(HWM + CHUNK)

    client.resume()
    expect(await within(15_000, 'the whole body', client.ended)).toBe('complete')
    expect(p.finished).toBe(true)
    expect(p.maxBuffered).toBeLessThanOrEqual(HWM + CHUNK)
    expectInOrder(client.body(), TOTAL)
    client.destroy()
  })
})

test('an SSE generator is paced the same way and every event arrives in order', async () => {
  const key = 'sse-1'
  const client = rawRequest(port, `/sse?key=${key}`, { pauseAfterHead: true })
  await client.head
  const p = await waitFor('the handler to start', () => producers.get(key))
  const stalledAt = await stalled(p)
  expect(stalledAt).toBeLessThan(TOTAL / 2)
  const frame = `id: 0\ndata: ${chunk(0).slice(0, -1)}\n\n`.length
  expect(p.maxBuffered).toBeLessThanOrEqual(HWM + frame + 8)
  client.resume()
  expect(await within(15_000, 'the whole stream', client.ended)).toBe('complete')
  const events = parseSse(client.body())
  expect(events).toHaveLength(TOTAL)
  events.forEach((e, i) => {
    if (e.id !== String(i) || !e.data.startsWith(String(i).padStart(8, '0'))) throw new Error(`event ${i} out of order: id ${e.id}`)
  })
  client.destroy()
})

test('a producer that ignores backpressure is cut at the hard limit instead of growing memory', async () => {
  const client = rawRequest(port, '/ignores-backpressure', { pauseAfterHead: true })
  const state = await waitFor('the handler to run', () => ignoring)
  // write() said "stop" (once the kernel buffers were full and the queue reached the
  // mark)...
  expect(state.falseAt).toBeGreaterThanOrEqual(0)
  // ...and the producer went on until the engine closed the stream (hard limit: 1 MiB).
  expect(state.closed).toBe(true)
  expect(state.writes).toBeLessThan(TOTAL)
  expect(Math.max(...state.buffered)).toBeLessThanOrEqual(1024 * 1024 + CHUNK)
  // The client sees a cut stream (or, if the cut came before the head was flushed, no
  // response at all), never a complete one.
  client.resume()
  expect(await within(5000, 'the connection to end', client.ended)).toBe('closed')
  expect(client.bodyBytes).toBeLessThan(TOTAL * CHUNK)
})
