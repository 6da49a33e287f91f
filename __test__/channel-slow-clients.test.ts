// A subscriber that stops reading must not slow the others or grow the server's memory:
// with slowClient 'close' it is disconnected (so it can resume from history), with
// 'drop-oldest' it loses its oldest queued events, counted as dropped. Its own process
// (vitest forks) keeps the RSS samples free of other files' work.
import { describe, expect, test } from 'vitest'
import type { Channel } from '../ts/index.js'
import { startApp } from './support/app.js'
import { RawSseClient } from './support/sse.js'
import { sleep, waitFor, within } from './support/wait.js'

const EVENT_BYTES = 1024
const BATCH = 32 // events published per tick: 32 KiB, far below a subscriber's mark
const HWM = 256 * 1024

let closePolicy!: Channel
let dropPolicy!: Channel
let burstClose!: Channel
let burstDrop!: Channel
const { port } = await startApp((app) => {
  closePolicy = app.channel('slow-close', { history: 100, slowClient: 'close', highWaterMark: HWM })
  dropPolicy = app.channel('slow-drop', { history: 100, slowClient: 'drop-oldest', highWaterMark: HWM })
  app.sse('/close', closePolicy)
  app.sse('/drop', dropPolicy)
  // Default channels (64 KiB mark), for bursts.
  burstClose = app.channel('burst-close')
  burstDrop = app.channel('burst-drop', { slowClient: 'drop-oldest' })
  app.sse('/burst-close', burstClose)
  app.sse('/burst-drop', burstDrop)
})

const payload = 'x'.repeat(EVENT_BYTES)
const MB = 1024 * 1024

/** The number of a channel's id (`<epoch>-<n>`). */
const seq = (id: string) => Number(id.slice(id.lastIndexOf('-') + 1))

/** A reader that keeps up and checks that ids arrive one by one, without storing events. */
function steadyReader(path: string, firstId: number) {
  let expected = firstId
  const out = { count: 0, outOfOrder: 0, last: 0 }
  const client = new RawSseClient(port, path, {
    keep: false,
    onEvent: (e) => {
      if (seq(e.id) !== expected) out.outOfOrder++
      expected = seq(e.id) + 1
      out.count++
      out.last = seq(e.id)
    },
  })
  return { client, out }
}

/**
 * Publishes `max` events in batches. Between batches it yields to the event loop and, if
 * the steady reader (in this same process, sharing the JS thread) lags by more than a few
 * batches, waits for it: the publisher runs at the steady reader's full rate, and the
 * stuck client has no say in it. Returns the number published and the highest RSS seen.
 */
async function publishPaced(ch: Channel, max: number, received: () => number) {
  let published = 0
  let maxRss = process.memoryUsage().rss
  while (published < max) {
    for (let i = 0; i < BATCH && published < max; i++, published++) ch.publish(payload)
    await sleep(0)
    const deadline = Date.now() + 5000
    while (published - received() > BATCH * 4 && Date.now() < deadline) await sleep(1)
    if (published % (BATCH * 64) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss)
  }
  return { published, maxRss: Math.max(maxRss, process.memoryUsage().rss) }
}

describe.each([
  ['close', '/close'],
  ['drop-oldest', '/drop'],
] as const)("slowClient '%s'", (policy, path) => {
  test('the stuck client is handled, the steady one gets every event, memory stays bounded', async () => {
    const ch = policy === 'close' ? closePolicy : dropPolicy
    const firstId = ch.metrics().published + 1
    const slow = new RawSseClient(port, path, { pauseAfterHead: true })
    const steady = steadyReader(path, firstId)
    await Promise.all([slow.head, steady.client.head])
    await waitFor('two subscribers', () => ch.subscribers === 2)

    const rssBefore = process.memoryUsage().rss
    const t0 = Date.now()
    // 48 MiB in all: far more than the stuck client's kernel buffers and queue hold.
    const TOTAL = (48 * MB) / EVENT_BYTES
    const { published, maxRss } = await within(30_000, 'publishing', publishPaced(ch, TOTAL, () => steady.out.count))
    const lastId = firstId + published - 1
    await waitFor('the steady reader to catch up', () => steady.out.last === lastId, { timeoutMs: 10_000 })
    const m = ch.metrics()

    // The steady reader saw everything, in order, and was never treated as slow.
    expect(steady.out).toEqual({ count: published, outOfOrder: 0, last: lastId })
    if (policy === 'close') {
      expect(m.closedSlow).toBe(1)
      expect(m.dropped).toBe(0)
      expect(ch.subscribers).toBe(1)
    } else {
      expect(m.closedSlow).toBe(0)
      expect(m.dropped).toBeGreaterThan(0)
      expect(ch.subscribers).toBe(2)
    }
    // Memory: the stuck client pins at most its queue (256 KiB) plus kernel buffers, not
    // the 48 MiB published. The bound is generous for GC noise but below the volume.
    const grew = maxRss - rssBefore
    expect(grew, `RSS grew by ${(grew / MB).toFixed(1)} MiB`).toBeLessThan(32 * MB)
    expect(Date.now() - t0).toBeLessThan(30_000)

    // The stuck client now reads what it was given.
    slow.resume()
    const slowIds = () => slow.events.map((e) => seq(e.id))
    if (policy === 'close') {
      // It was cut: a gap-free prefix, then the connection ends so it can resume.
      expect(await within(10_000, 'the cut connection to end', slow.ended)).toBe('closed')
      const got = slowIds()
      expect(got.length).toBeGreaterThan(0)
      expect(got.length).toBeLessThan(published)
      expect(got).toEqual(got.map((_, i) => firstId + i))
    } else {
      // Still subscribed: it receives a later event, after a counted gap.
      const marker = ch.publish('end', { event: 'marker' })
      await waitFor('the marker', () => slow.events.some((e) => e.id === marker), { timeoutMs: 10_000 })
      const got = slowIds().filter((id) => !Number.isNaN(id))
      const gaps = got.filter((id, i) => i > 0 && id !== got[i - 1] + 1).length
      expect(gaps).toBeGreaterThan(0)
      expect(got.every((id, i) => i === 0 || id > got[i - 1])).toBe(true)
      expect(got.length + m.dropped).toBeGreaterThanOrEqual(published)
    }
    slow.destroy()
    steady.client.destroy()
    await waitFor('no subscribers', () => ch.subscribers === 0, { timeoutMs: 2000 })
  }, 60_000)
})

describe.each([
  ['close', '/burst-close'],
  ['drop-oldest', '/burst-drop'],
] as const)("slowClient '%s' and bursts", (policy, path) => {
  test('readers that keep up are never cut or dropped for a burst larger than the mark', async () => {
    const ch = policy === 'close' ? burstClose : burstDrop
    const firstId = ch.metrics().published + 1
    const readers = Array.from({ length: 3 }, () => steadyReader(path, firstId))
    await Promise.all(readers.map((r) => r.client.head))
    await waitFor('three subscribers', () => ch.subscribers === 3)
    const payload10k = 'y'.repeat(10 * 1024)
    let published = 0
    const allHave = (n: number) => waitFor(`every reader to have ${n}`, () => readers.every((r) => r.out.count >= n), { timeoutMs: 5000 })
    // Ten 10 KB events in one turn, seven times.
    for (let trial = 0; trial < 7; trial++) {
      for (let i = 0; i < 10; i++, published++) ch.publish(payload10k)
      await allHave(published)
    }
    // 100 KB bursts at 1 MB/s for a second.
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 10; i++, published++) ch.publish(payload10k)
      await sleep(100)
    }
    await allHave(published)
    for (const r of readers) expect(r.out).toEqual({ count: published, outOfOrder: 0, last: firstId + published - 1 })
    expect(ch.metrics()).toMatchObject({ subscribers: 3, closedSlow: 0, dropped: 0, delivered: 3 * published })
    for (const r of readers) r.client.destroy()
    await waitFor('no subscribers', () => ch.subscribers === 0, { timeoutMs: 2000 })
  }, 30_000)
})
