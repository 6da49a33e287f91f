// Broadcast channels from Node: channel routes and stream.subscribe(), fan-out to 1,000
// connections, Last-Event-ID replay (header and query), the `missed` signal, close().
import { EventSource } from 'eventsource'
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { Channel, RatError, type SseStream } from '../ts/index.js'
import { startApp } from './support/app.js'
import { collect, RawSseClient, type SseMessage } from './support/sse.js'
import { waitFor, within } from './support/wait.js'

const subscribeResults: number[] = []
const jsStreams: SseStream[] = []
const lastIds: Array<string | null> = []

let fanout!: Channel
let replay!: Channel
let short!: Channel
let closing!: Channel
let misc!: Channel

const { app, port, url } = await startApp((app) => {
  fanout = app.channel('fanout', { history: 100 })
  replay = app.channel('replay', { history: 1000 })
  short = app.channel('short', { history: 5 })
  closing = app.channel('closing')
  misc = app.channel('misc')
  app.sse('/fanout', fanout)
  app.sse('/replay', replay)
  app.sse('/short', short)
  app.sse('/misc', misc)
  // A JS handler that sends its own init event, then hands the stream to the channel.
  app.sse('/with-init/:room', (req, stream) => {
    lastIds.push(req.lastEventId)
    jsStreams.push(stream)
    stream.send({ room: req.params.room }, { event: 'init', retry: 100 })
    subscribeResults.push(stream.subscribe(req.params.room === 'short' ? short : replay))
  })
  app.sse('/closing-js', (_req, stream) => {
    stream.send('x', { event: 'init' })
    stream.subscribe(closing)
  })
  app.sse('/closing', closing)
})

// A channel's ids are `<epoch>-<n>`: the epoch names the channel's life, n counts from 1.
const epochOf = (id: string) => id.slice(0, id.lastIndexOf('-'))
const seq = (id: string) => Number(id.slice(id.lastIndexOf('-') + 1))
/** The events' ids by their number alone. */
const ids = (events: SseMessage[]) => events.map((e) => String(seq(e.id)))
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i))

describe('the channel API', () => {
  test('app.channel(name) returns the same channel for the same name', () => {
    expect(app.channel('fanout')).toBe(fanout)
    expect(fanout.name).toBe('fanout')
    // A channel belongs to its app: there is no public constructor.
    // @ts-expect-error the constructor is private
    expect(() => new Channel('standalone')).toThrow(/made by app.channel\(name\)/)
  })

  test('publish takes events, strings and values, and returns ids in order', async () => {
    const client = new RawSseClient(port, '/misc')
    await client.head
    await waitFor('subscriber', () => misc.subscribers === 1)
    const first = misc.publish('text')
    expect(first).toMatch(/^[0-9a-z]{11}-1$/)
    const id = (n: number) => `${epochOf(first)}-${n}`
    expect(misc.publish({ a: 1 }, { event: 'row' })).toBe(id(2))
    expect(misc.publish(42)).toBe(id(3))
    expect(misc.publish('own id', { id: 'x-9' })).toBe('x-9')
    expect(misc.publish(['array'])).toBe(id(4))
    expect(misc.publish(undefined, { event: 'ping' })).toBe(id(5))
    expect(() => misc.publish(undefined)).toThrow(RatError)
    // Published at once; handed to the subscriber by the channel's fan-out task.
    expect(misc.metrics()).toMatchObject({ subscribers: 1, published: 6 })
    misc.comment('just a comment')
    const got = await client.waitForEvents(6)
    expect(misc.metrics()).toMatchObject({ subscribers: 1, published: 6, delivered: 6, dropped: 0, closedSlow: 0 })
    expect(got.map((e) => [e.event, e.data, e.id])).toEqual([
      ['message', 'text', id(1)],
      ['row', '{"a":1}', id(2)],
      ['message', '42', id(3)],
      ['message', 'own id', 'x-9'],
      ['message', '["array"]', id(4)],
      ['ping', '', id(5)],
    ])
    await waitFor('the comment', () => client.parser.comments.includes('just a comment'))
    client.destroy()
    await waitFor('the subscriber to leave', () => misc.subscribers === 0, { timeoutMs: 1000 })
  })

  test('subscribers leave as soon as their connection closes', async () => {
    const before = misc.subscribers
    const clients = Array.from({ length: 20 }, () => new RawSseClient(port, '/misc'))
    await Promise.all(clients.map((c) => c.head))
    await waitFor('20 more subscribers', () => misc.subscribers === before + 20)
    for (const c of clients) c.destroy()
    await waitFor('them to leave', () => misc.subscribers === before, { timeoutMs: 1000 })
    // A publish to nobody is fine.
    misc.publish('to nobody')
  })
})

test('1,000 clients all receive every published event, in order', async () => {
  const N = 1000
  const EVENTS = 20
  const clients: RawSseClient[] = []
  try {
    // Connect in waves so that the accept backlog never overflows.
    for (let wave = 0; wave < N / 200; wave++) {
      const batch = Array.from({ length: 200 }, () => new RawSseClient(port, '/fanout'))
      clients.push(...batch)
      await within(10_000, `wave ${wave} heads`, Promise.all(batch.map((c) => c.head)))
    }
    await waitFor(`${N} subscribers`, () => fanout.subscribers === N, { timeoutMs: 10_000 })
    expect(app.metrics().activeStreams).toBeGreaterThanOrEqual(N)
    for (let i = 1; i <= EVENTS; i++) fanout.publish({ i }, { event: 'tick' })
    await within(
      20_000,
      'every client to get every event',
      Promise.all(clients.map((c) => c.waitForEvents(EVENTS, 20_000))),
    )
    const want = range(1, EVENTS)
    for (const c of clients) {
      expect(ids(c.events)).toEqual(want)
      expect(c.events.map((e) => JSON.parse(e.data).i)).toEqual(want.map(Number))
    }
    expect(fanout.metrics()).toMatchObject({ subscribers: N, published: EVENTS, delivered: N * EVENTS, dropped: 0 })
  } finally {
    for (const c of clients) c.destroy()
  }
  await waitFor('subscribers to leave', () => fanout.subscribers === 0, { timeoutMs: 5000 })
}, 60_000)

describe('resuming with Last-Event-ID', () => {
  test('a client that reconnects with the header receives exactly the missed events', async () => {
    const baseId = replay.publish('r') // ids continue from here
    const base = seq(baseId)
    const id = (n: number) => `${epochOf(baseId)}-${n}`
    for (let i = 1; i <= 9; i++) replay.publish(`r${i}`)
    const replayedBefore = replay.metrics().replayed
    const client = new RawSseClient(port, '/replay', { headers: { 'last-event-id': id(base + 4) } })
    await client.waitForEvents(5)
    expect(ids(client.events)).toEqual(range(base + 5, base + 9))
    expect(replay.metrics().replayed - replayedBefore).toBe(5)
    // Then live events, with no gap and no duplicate.
    replay.publish('live 1')
    replay.publish('live 2')
    await client.waitForEvents(7)
    expect(ids(client.events)).toEqual(range(base + 5, base + 11))
    client.destroy()
  })

  test('the lastEventId query parameter works the same way', async () => {
    const last = replay.publish('q0')
    replay.publish('q1')
    replay.publish('q2')
    const client = new RawSseClient(port, `/replay?lastEventId=${last}`)
    await client.waitForEvents(2)
    replay.publish('q3')
    await client.waitForEvents(3)
    expect(client.events.map((e) => e.data)).toEqual(['q1', 'q2', 'q3'])
    client.destroy()
  })

  test('the newest id replays nothing; live events follow', async () => {
    const last = replay.publish('newest')
    const client = new RawSseClient(port, '/replay', { headers: { 'last-event-id': last } })
    await client.head
    await waitFor('subscribed', () => replay.subscribers >= 1)
    replay.publish('after')
    await client.waitForEvents(1)
    expect(client.events.map((e) => e.data)).toEqual(['after'])
    client.destroy()
  })

  test('an id older than history gets a missed event, then what history holds', async () => {
    const firstId = short.publish('s')
    const first = seq(firstId)
    const id = (n: number) => `${epochOf(firstId)}-${n}`
    for (let i = 1; i < 20; i++) short.publish(`s${i}`)
    const newest = first + 19
    const client = new RawSseClient(port, '/short', { headers: { 'last-event-id': id(first + 2) } })
    await client.waitForEvents(6)
    expect(client.events[0].event).toBe('missed')
    expect(JSON.parse(client.events[0].data)).toEqual({ lastEventId: id(first + 2), firstAvailableId: id(newest - 4) })
    expect(ids(client.events.slice(1))).toEqual(range(newest - 4, newest))
    client.destroy()
  })

  test('an id from before a restart gets the missed event, not the events that share its number', async () => {
    // The first life: five events, the client saw the fifth.
    const before = await startApp((a) => a.sse('/life', a.channel('life')))
    const ch1 = before.app.channel('life')
    let seen = ''
    for (let i = 1; i <= 5; i++) seen = ch1.publish(`old ${i}`)
    await before.app.close(100)
    // The second life published eight before the client comes back.
    const after = await startApp((a) => a.sse('/life', a.channel('life')))
    const ch2 = after.app.channel('life')
    for (let i = 1; i <= 8; i++) ch2.publish(`new ${i}`)
    const client = new RawSseClient(after.port, '/life', { headers: { 'last-event-id': seen } })
    await client.waitForEvents(9)
    expect(client.events[0].event).toBe('missed')
    expect(JSON.parse(client.events[0].data)).toMatchObject({ lastEventId: seen })
    expect(client.events.slice(1).map((e) => e.data)).toEqual(range(1, 8).map((n) => `new ${n}`))
    expect(epochOf(client.events[1].id)).not.toBe(epochOf(seen))
    client.destroy()
  })

  test('an unknown id also gets the missed event', async () => {
    const client = new RawSseClient(port, '/short', { headers: { 'last-event-id': 'no-such-id' } })
    await client.waitForEvents(6)
    expect(client.events[0].event).toBe('missed')
    expect(JSON.parse(client.events[0].data).lastEventId).toBe('no-such-id')
    client.destroy()
  })

  test('stream.subscribe() after an init event; subscribe() reports replayed or missed', async () => {
    subscribeResults.length = 0
    const client = new RawSseClient(port, '/with-init/short', { headers: { 'last-event-id': 'unknown' } })
    await client.waitForEvents(7)
    expect(client.events[0]).toMatchObject({ event: 'init', data: '{"room":"short"}' })
    expect(client.events[1].event).toBe('missed')
    expect(client.events.slice(2).every((e) => e.event === 'message')).toBe(true)
    expect(subscribeResults).toEqual([-1])
    client.destroy()

    const last = replay.publish('i0')
    replay.publish('i1')
    const c2 = new RawSseClient(port, '/with-init/replay', { headers: { 'last-event-id': last } })
    await c2.waitForEvents(2)
    expect(c2.events.map((e) => [e.event, e.data])).toEqual([
      ['init', '{"room":"replay"}'],
      ['message', 'i1'],
    ])
    expect(subscribeResults).toEqual([-1, 1])
    c2.destroy()
  })

  test('EventSource reconnects after its stream ends and resumes without gaps or duplicates', async () => {
    lastIds.length = 0
    jsStreams.length = 0
    const es = new EventSource(url('/with-init/replay'))
    try {
      await collect(es, { types: ['init'], count: 1 })
      const all = collect(es, { count: 6, timeoutMs: 8000 })
      const firstThree = collect(es, { count: 3 })
      const firstId = replay.publish('e1')
      const first = seq(firstId)
      replay.publish('e2')
      replay.publish('e3')
      // Once the client has the first three, end its stream from the server.
      expect((await firstThree).map((e) => e.data)).toEqual(['e1', 'e2', 'e3'])
      expect(jsStreams).toHaveLength(1)
      jsStreams[0].end()
      // Published while the client is away (or reconnecting): must come from history.
      replay.publish('e4')
      replay.publish('e5')
      await waitFor('the reconnect', () => jsStreams.length === 2, { timeoutMs: 5000 })
      replay.publish('e6')
      const got = await all
      expect(got.map((e) => e.data)).toEqual(['e1', 'e2', 'e3', 'e4', 'e5', 'e6'])
      expect(got.map((e) => e.lastEventId)).toEqual(range(first, first + 5).map((n) => `${epochOf(firstId)}-${n}`))
      expect(lastIds).toEqual([null, `${epochOf(firstId)}-${first + 2}`])
    } finally {
      es.close()
    }
  })
})

describe('closing a channel', () => {
  test('ends every subscriber stream cleanly; later publishes throw', async () => {
    const a = new RawSseClient(port, '/closing')
    const b = new RawSseClient(port, '/closing-js')
    await Promise.all([a.head, b.waitForEvents(1)])
    await waitFor('two subscribers', () => closing.subscribers === 2)
    closing.publish('last words')
    closing.close()
    expect(closing.closed).toBe(true)
    expect(await within(2000, 'channel-route stream to end', a.ended)).toBe('complete')
    expect(await within(2000, 'JS-route stream to end', b.ended)).toBe('complete')
    expect(a.events.map((e) => e.data)).toEqual(['last words'])
    expect(b.events.map((e) => e.data)).toEqual(['x', 'last words'])
    let err: unknown
    try {
      closing.publish('too late')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(RatError)
    expect((err as RatError).code).toBe('ERR_CLOSED')
    // A new subscriber to the closed channel gets an ended stream at once.
    const late = new RawSseClient(port, '/closing')
    expect(await within(2000, 'late subscriber end', late.ended)).toBe('complete')
  })

  test('app.channel(name) after close gives a fresh channel', () => {
    const ch = app.channel('temp')
    ch.close()
    const again = app.channel('temp')
    expect(again).not.toBe(ch)
    expect(again.closed).toBe(false)
    expect(app.deleteChannel('temp')).toBe(true)
    expect(again.closed).toBe(true)
  })

  test('a channel-served route sends SSE headers', async () => {
    const ac = new AbortController()
    const res = await fetch(url('/misc'), { signal: ac.signal })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('text/event-stream')
    expect(res.headers.get('cache-control')).toMatch(/no-cache/)
    ac.abort()
    await res.body?.cancel().catch(() => {})
  })
})
