// Channels shared between engine processes through a real redis-server (started here on a
// free port). Without redis-server on PATH these tests are skipped, said in one line.
import { fetch } from 'undici'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createClusterWorker } from '../examples/cluster.js'
import { createApp, type App } from '../ts/index.js'
import { runFixture } from './support/child.js'
import { freePort, Redis, redisServer } from './support/redis.js'
import { RawSseClient } from './support/sse.js'
import { waitFor } from './support/wait.js'

const missing = redisServer === null
if (missing) console.log('redis-server is not on PATH: the Redis tests are skipped (CI installs it)')

let prefixes = 0
const prefix = () => `t${process.pid}-${++prefixes}:`

interface State {
  connected: boolean
  queued: number
  sent: number
  disconnects: number
  subscribers: number
}

async function engine(url: string, keyPrefix: string) {
  const child = runFixture('redis-node.mts', [url, keyPrefix])
  await child.printed('listening ')
  const port = Number(/listening (\d+)/.exec(child.stdout())![1])
  const base = `http://127.0.0.1:${port}`
  return {
    port,
    publish: async (n: number, data: string, wait: boolean): Promise<string[]> => {
      const res = await fetch(`${base}/publish?n=${n}&data=${data}&wait=${wait ? 1 : 0}`, { method: 'POST' })
      expect(res.status).toBe(200)
      return ((await res.json()) as { ids: string[] }).ids
    },
    state: async () => (await (await fetch(`${base}/redis`)).json()) as State,
  }
}

type Engine = Awaited<ReturnType<typeof engine>>

async function subscribe(e: Engine, lastEventId?: string): Promise<RawSseClient> {
  const before = (await e.state()).subscribers
  const c = new RawSseClient(e.port, '/news', { headers: lastEventId ? { 'last-event-id': lastEventId } : {} })
  expect((await c.head).status).toBe(200)
  await waitFor('the subscriber to register', async () => (await e.state()).subscribers > before)
  return c
}

describe.skipIf(missing)('channels shared through Redis', () => {
  let redis: Redis
  beforeAll(async () => {
    redis = await Redis.start()
  })
  afterAll(async () => {
    await redis?.stop()
  })

  test('a publish on process A reaches subscribers on A and B in order, with the same ids', async () => {
    const p = prefix()
    const [a, b] = await Promise.all([engine(redis.url, p), engine(redis.url, p)])
    const [onA, onB] = [await subscribe(a), await subscribe(b)]
    const ids = await a.publish(20, 'm', true)
    expect(new Set(ids).size).toBe(20)
    const want = ids.map((id, i) => ({ id, data: `m${i}` }))
    const pick = (c: RawSseClient) => c.events.map(({ id, data }) => ({ id, data }))
    await onA.waitForEvents(20)
    await onB.waitForEvents(20)
    expect(pick(onA)).toEqual(want)
    expect(pick(onB)).toEqual(want)
    onA.socket.destroy()
    onB.socket.destroy()
  })

  test('a client resumes on process B with the Last-Event-ID it read on A', async () => {
    const p = prefix()
    const a = await engine(redis.url, p)
    const onA = await subscribe(a)
    const ids = await a.publish(10, 'm', true)
    await onA.waitForEvents(4)
    onA.socket.destroy()
    const b = await engine(redis.url, p)
    const onB = await subscribe(b, onA.events[3].id)
    await onB.waitForEvents(6)
    await b.publish(1, 'live', true)
    await onB.waitForEvents(7)
    expect(onB.events.map((e) => e.data)).toEqual(['m4', 'm5', 'm6', 'm7', 'm8', 'm9', 'live0'])
    expect(onB.events.slice(0, 6).map((e) => e.id)).toEqual(ids.slice(4))
    onB.socket.destroy()
  })

  test('redis-server killed and restarted mid-stream: what was published meanwhile and after arrives, in order', async () => {
    const p = prefix()
    const [a, b] = await Promise.all([engine(redis.url, p), engine(redis.url, p)])
    const onB = await subscribe(b)
    await a.publish(3, 'before', true)
    await onB.waitForEvents(3)
    await redis.stop()
    await waitFor('A to see Redis gone', async () => !(await a.state()).connected, { timeoutMs: 10_000, intervalMs: 50 })
    // Queued while Redis is down: publish returns '' (Redis assigns ids later).
    expect(await a.publish(4, 'down', false)).toEqual(['', '', '', ''])
    expect((await a.state()).queued).toBeGreaterThanOrEqual(4)
    await redis.start()
    const after = await a.publish(3, 'after', true)
    await onB.waitForEvents(10, 10_000)
    expect(onB.events.map((e) => e.data)).toEqual(['before0', 'before1', 'before2', 'down0', 'down1', 'down2', 'down3', 'after0', 'after1', 'after2'])
    expect(onB.events.slice(7).map((e) => e.id)).toEqual(after)
    const s = await b.state()
    expect(s.connected).toBe(true)
    expect(s.disconnects).toBeGreaterThanOrEqual(1)
    expect((await a.state()).queued).toBe(0)
    onB.socket.destroy()
  })

  test('examples/cluster.ts: each worker says who served the page; a message said on one reaches the stream of the other', async () => {
    const workers = [createClusterWorker(redis.url, 'one'), createClusterWorker(redis.url, 'two')]
    try {
      const ports: number[] = []
      for (const w of workers) ports.push((await w.app.listen({ port: 0 })).port)
      expect(await (await fetch(`http://127.0.0.1:${ports[1]}/`)).text()).toContain('Served by worker two')
      const stream = new RawSseClient(ports[1], '/ticker')
      await waitFor('the subscriber', () => workers[1].app.channel('ticker').subscribers === 1)
      const res = await fetch(`http://127.0.0.1:${ports[0]}/say?text=hello`, { method: 'POST' })
      const { id } = (await res.json()) as { id: string }
      await waitFor('the message on worker two', () => stream.events.some((e) => e.id === id), { timeoutMs: 5000 })
      expect(JSON.parse(stream.events.find((e) => e.id === id)!.data)).toEqual({ worker: 'one', text: 'hello' })
      stream.socket.destroy()
    } finally {
      for (const w of workers) {
        w.stop()
        await w.app.close(100)
      }
    }
  })

  test('a channel made with { redis: false } stays in its process', async () => {
    const p = prefix()
    const apps: App[] = []
    try {
      for (let i = 0; i < 2; i++) {
        const app = createApp({ heartbeatMs: 0, redis: { url: redis.url, keyPrefix: p } })
        apps.push(app)
        app.sse('/local', app.channel('local', { redis: false }))
        app.sse('/shared', app.channel('shared'))
        await app.listen({ port: 0 })
      }
      const [one, two] = apps
      const port = two.address!.port
      const shared = new RawSseClient(port, '/shared')
      const local = new RawSseClient(port, '/local')
      await waitFor('both subscribers', () => two.channel('shared').subscribers === 1 && two.channel('local').subscribers === 1)
      // The local channel keeps local ids; the shared one's come from Redis.
      expect(one.channel('local').publish('here')).toMatch(/-1$/)
      const id = await one.channel('shared').publishAsync('everywhere')
      expect(id).toMatch(/^\d+-\d+$/)
      expect((await shared.waitForEvents(1))[0]).toMatchObject({ id, data: 'everywhere' })
      expect(local.count).toBe(0)
      expect(two.channel('local').metrics().published).toBe(0)
      expect(two.metrics().redis).toMatchObject({ connected: true, received: 1, channels: 1 })
      shared.socket.destroy()
      local.socket.destroy()
    } finally {
      for (const app of apps) await app.close(100)
    }
  })
})

test('a Redis URL that cannot be used fails createApp, one that cannot be reached fails listen, with ERR_REDIS', async () => {
  expect(() => createApp({ redis: 'http://127.0.0.1/' })).toThrow(expect.objectContaining({ code: 'ERR_REDIS', message: expect.stringMatching(/invalid Redis URL/) }))
  const port = await freePort()
  const app = createApp({ redis: `redis://127.0.0.1:${port}/0` })
  await expect(app.listen({ port: 0 })).rejects.toMatchObject({ code: 'ERR_REDIS', message: expect.stringContaining(`cannot connect to Redis at 127.0.0.1:${port}`) })
})
