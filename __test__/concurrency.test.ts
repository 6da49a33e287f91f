// Many clients at once: hundreds of concurrent SSE streams all get every event, the stream
// count in metrics() rises and falls back to 0, and a burst of plain requests all succeed
// (the dispatcher hands JS several requests per call under load).
import { Agent, request } from 'undici'
import { expect, test } from 'vitest'
import { sseEvent } from '../ts/index.js'
import { startApp } from './support/app.js'
import { parseSse, RawSseClient } from './support/sse.js'
import { deferred, waitFor, within } from './support/wait.js'

const EVENTS = 20
let go = deferred()

// Handlers that run in the same synchronous dispatch see the same batch number.
let batch = 0
let batchScheduled = false
const batchSizes = new Map<number, number>()
function countBatch(): number {
  if (!batchScheduled) {
    batchScheduled = true
    queueMicrotask(() => {
      batch++
      batchScheduled = false
    })
  }
  batchSizes.set(batch, (batchSizes.get(batch) ?? 0) + 1)
  return batch
}

const { app, port, url } = await startApp((app) => {
  // Says hello at once, then waits for the test's signal before sending its events, so
  // that every stream is open at the same time.
  app.sse('/feed/:client', async function* (req) {
    yield sseEvent(req.params.client, { event: 'hello' })
    await go.promise
    for (let i = 1; i <= EVENTS; i++) yield sseEvent(`${req.params.client}:${i}`, { id: i })
  })
  app.get('/plain/<int:n>', (req) => {
    countBatch()
    return { n: req.params.n }
  })
})

test('250 raw SSE clients at once each receive all their events, in order', async () => {
  const N = 250
  go = deferred()
  const clients = Array.from({ length: N }, (_, i) => new RawSseClient(port, `/feed/c${i}`))
  try {
    await within(
      15_000,
      'every client to get its hello',
      Promise.all(clients.map((c) => c.waitForEvents(1, 15_000))),
    )
    await waitFor('all streams counted', () => app.metrics().activeStreams >= N, { timeoutMs: 5000 })
    expect(app.metrics().activeStreams).toBe(N)
    go.resolve()
    const ends = await within(20_000, 'every stream to end', Promise.all(clients.map((c) => c.ended)))
    expect(ends.every((e) => e === 'complete')).toBe(true)
    clients.forEach((c, i) => {
      const want = [`c${i}`, ...Array.from({ length: EVENTS }, (_, k) => `c${i}:${k + 1}`)]
      expect(c.events.map((e) => e.data)).toEqual(want)
    })
    await waitFor('activeStreams back to 0', () => app.metrics().activeStreams === 0, { timeoutMs: 5000 })
  } finally {
    for (const c of clients) c.destroy()
  }
  await waitFor('connections closed', () => app.metrics().activeConnections === 0, { timeoutMs: 5000 })
})

test('200 concurrent SSE streams through undici, all complete', async () => {
  const N = 200
  go = deferred()
  const agent = new Agent({ connections: N + 10 })
  try {
    const responses = await within(
      15_000,
      'all heads',
      Promise.all(Array.from({ length: N }, (_, i) => request(url(`/feed/u${i}`), { dispatcher: agent }))),
    )
    expect(responses.every((r) => r.statusCode === 200)).toBe(true)
    await waitFor('all streams counted', () => app.metrics().activeStreams >= N, { timeoutMs: 5000 })
    go.resolve()
    const bodies = await within(20_000, 'all bodies', Promise.all(responses.map((r) => r.body.text())))
    bodies.forEach((body, i) => {
      const events = parseSse(body)
      expect(events).toHaveLength(EVENTS + 1)
      expect(events.at(-1)).toMatchObject({ id: String(EVENTS), data: `u${i}:${EVENTS}` })
    })
    await waitFor('activeStreams back to 0', () => app.metrics().activeStreams === 0, { timeoutMs: 5000 })
  } finally {
    await agent.close()
  }
})

test('500 concurrent plain requests all succeed; JS gets them in batches', async () => {
  const N = 500
  batchSizes.clear()
  const before = app.metrics().totalRequests
  const agent = new Agent({ connections: N })
  try {
    const results = await within(
      30_000,
      'all responses',
      Promise.all(
        Array.from({ length: N }, async (_, i) => {
          const r = await request(url(`/plain/${i}`), { dispatcher: agent })
          return { status: r.statusCode, body: (await r.body.json()) as { n: number } }
        }),
      ),
    )
    results.forEach((r, i) => {
      expect(r.status).toBe(200)
      expect(r.body.n).toBe(i)
    })
  } finally {
    await agent.close()
  }
  expect(app.metrics().totalRequests - before).toBe(N)
  const sizes = [...batchSizes.values()]
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(N)
  // Under this burst at least one JS call carried several requests.
  expect(Math.max(...sizes)).toBeGreaterThan(1)
})
