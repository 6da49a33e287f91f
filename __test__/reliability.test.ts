// The soak and the churn of `npm run soak`, CI-sized: the same server
// (fixtures/soak-server.mts), load client (rat-bench, in its own process) and checks
// (scripts/soak/lib.mjs).
//
// Soak: channel subscribers, some reconnecting with Last-Event-ID all along; every event
// is checked against each subscriber's own sequence: nothing lost, duplicated, reordered.
// Churn: connect / subscribe / leave cycles over SSE generators, chunked generators,
// (req, stream) handlers, async plain handlers and a channel: afterwards every counter is
// back at rest, every handler's finally ran exactly once, RSS grew less than 10%. The same
// for WebSockets subscribed to a channel, cut, closed, or closed after an event: every
// close handler once.
import { beforeAll, expect, test } from 'vitest'
import { churn, ratBench, soak, wsChurn } from '../scripts/soak/lib.mjs'

let bin = ''
beforeAll(() => {
  bin = ratBench() // built by cargo test (target/debug); built here if missing
}, 300_000)

test('200 subscribers with reconnects: no event lost, duplicated or out of order', async () => {
  const seconds = 5
  const reconnectsPerS = 20
  const r = await soak({ bin, subscribers: 200, seconds, rate: 20, reconnectsPerS, reconnectDelayMs: 500, warmupS: 1, settleS: 15 })
  const c = r.client
  expect(c.all_connected).toBe(true)
  for (const key of ['lost', 'duplicated', 'out_of_order', 'corrupt', 'missed_notices', 'server_closed', 'bad_status', 'connect_failed']) {
    expect([key, c[key]]).toEqual([key, 0])
  }
  expect(c.subscribers_complete).toBe(200)
  expect(c.events).toBe(c.events_owed)
  // Not a vacuous run: each subscriber got most of what was published.
  expect(c.final_n).toBeGreaterThanOrEqual(50)
  expect(c.events).toBeGreaterThanOrEqual(200 * c.final_n * 0.5)
  expect(c.reconnects).toBeGreaterThanOrEqual(reconnectsPerS * seconds * 0.5)
  expect(r.server.wrongId).toBe(0)
  expect(r.server.channels.soak.closedSlow).toBe(0)
  expect(r.server.channels.soak.replayed).toBeGreaterThan(0)
  expect(r.atRest).toBe(true)
}, 60_000)

test('2,000 connect/subscribe/leave cycles: counters at rest, every finally once, RSS flat', async () => {
  const cycles = 2000
  const r = await churn({ bin, cycles, warmupFraction: 0.5 })
  expect(r.client.cycles).toBe(cycles)
  expect(r.client.failed).toBe(0)
  expect(r.client.early_closed).toBeGreaterThan(0)
  expect(r.atRest).toBe(true)
  const { started, finished, finallyTwice } = r.server.counts
  expect(started).toBeGreaterThanOrEqual(cycles * 0.5)
  expect(finished).toBe(started)
  expect(finallyTwice).toBe(0)
  expect(r.server.metrics.totalConnections).toBe(cycles)
  console.log(`churn: RSS after a full GC ${r.rss.warmMiB.toFixed(1)} MiB halfway, ${r.rss.endMiB.toFixed(1)} MiB at the end`)
  expect(r.rss.growth).toBeLessThan(0.1)
}, 60_000)

test('2,000 WebSocket open/echo/leave cycles, each socket subscribed to a channel: counters at rest, every close handler once, RSS flat', async () => {
  const cycles = 2000
  const r = await wsChurn({ cycles })
  expect(r.client.errors).toEqual([])
  expect(r.client.failed).toBe(0)
  expect(r.client.cycles).toBe(cycles)
  expect([r.client.cut, r.client.closed, r.client.afterEvent].every((n) => n >= cycles / 4)).toBe(true)
  expect(r.atRest).toBe(true)
  expect(r.server.ws).toEqual({ opened: cycles, closed: cycles, closedTwice: 0, messages: cycles })
  expect(r.server.metrics.totalConnections).toBe(cycles)
  console.log(`ws churn: RSS after a full GC ${r.rss.warmMiB.toFixed(1)} MiB halfway, ${r.rss.endMiB.toFixed(1)} MiB at the end`)
  expect(r.rss.growth).toBeLessThan(0.1)
}, 60_000)
