// A stream subscribed to several channels resumes each of them: its Last-Event-ID names
// its position in every channel (`@a=<id>&b=<id>`), sent as an id-only event after each
// piece a channel hands it.
import { EventSource } from 'eventsource'
import { expect, test } from 'vitest'
import type { SseStream } from '../ts/index.js'
import { startApp } from './support/app.js'
import { collect } from './support/sse.js'
import { waitFor } from './support/wait.js'

const streams: SseStream[] = []
const lastIds: Array<string | null> = []
const results: number[][] = []

const { app, url } = await startApp((app) => {
  const a = app.channel('a')
  const b = app.channel('b')
  app.sse('/both', (req, stream) => {
    lastIds.push(req.lastEventId)
    streams.push(stream)
    stream.send('hello', { event: 'init', retry: 100 })
    results.push([stream.subscribe(a), stream.subscribe(b)])
  })
})

test('EventSource reconnecting mid-stream resumes every channel of its stream after its own position', async () => {
  const [a, b] = [app.channel('a'), app.channel('b')]
  b.publish('b0') // before the stream: never sent to it
  const es = new EventSource(url('/both'))
  try {
    await collect(es, { types: ['init'], count: 1 })
    const all = collect(es, { count: 7, timeoutMs: 8000 })
    const first = collect(es, { count: 3 })
    a.publish('a1')
    b.publish('b1')
    a.publish('a2')
    // Each channel keeps its order; channels do not order their events between them.
    expect((await first).map((e) => e.data).sort()).toEqual(['a1', 'a2', 'b1'])
    streams[0].end()
    // Published while the client is away: each channel replays its own.
    b.publish('b2')
    a.publish('a3')
    b.publish('b3')
    await waitFor('the reconnect', () => streams.length === 2, { timeoutMs: 5000 })
    a.publish('a4')
    const got = (await all).map((e) => e.data)
    // Every event once: nothing missed while away, nothing repeated.
    expect(got.filter((d) => d.startsWith('a'))).toEqual(['a1', 'a2', 'a3', 'a4'])
    expect(got.filter((d) => d.startsWith('b'))).toEqual(['b1', 'b2', 'b3'])
    expect(lastIds[0]).toBeNull()
    const back = new URLSearchParams(lastIds[1]!.slice(1))
    expect(lastIds[1]!.startsWith('@')).toBe(true)
    expect([...back.keys()]).toEqual(['a', 'b'])
    expect(back.get('a')).toMatch(/-2$/) // a2, a's second event
    expect(back.get('b')).toMatch(/-2$/) // b1, b's second event (b0 came first)
    expect(results).toEqual([
      [0, 0],
      [1, 2],
    ])
  } finally {
    es.close()
  }
})
