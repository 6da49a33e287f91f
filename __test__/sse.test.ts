// SSE routes through the `eventsource` package: named events, multi-line data, ids,
// retry, JSON, strings shaped like SSE fields staying data, and reconnection carrying
// Last-Event-ID back to the handler.
import { EventSource } from 'eventsource'
import { fetch } from 'undici'
import { afterEach, describe, expect, test } from 'vitest'
import { RatError, sseEvent, type Channel } from '../ts/index.js'
import { startApp } from './support/app.js'
import { collect, parseSse, RawSseClient } from './support/sse.js'
import { waitFor } from './support/wait.js'

const opened: EventSource[] = []
function open(url: string): EventSource {
  const es = new EventSource(url)
  opened.push(es)
  return es
}
afterEach(() => {
  for (const es of opened.splice(0)) es.close()
})

/** Text shaped like SSE fields, as a client could get it into data: it must stay data. */
const INJECTION = 'event: admin\ndata: evil\nid: 666\n\n'
let injection!: Channel
let explicit!: Channel

const lastIds: Array<string | null> = []
const { url } = await startApp((app) => {
  app.sse('/named', (_req, stream) => {
    stream.send('hello', { event: 'greeting' })
    stream.send('bye', { event: 'farewell', id: 'f1' })
    stream.send(undefined, { event: 'ping' })
    stream.send('plain message')
    stream.end()
  })
  app.sse('/multiline', (_req, stream) => {
    stream.send('lf one\nlf two', {})
    stream.send('crlf one\r\ncrlf two', {})
    stream.send('cr one\rcr two', {})
    stream.send('string a\nstring b\r\nstring c')
  })
  app.sse('/ids', async function* () {
    yield sseEvent('one', { id: 1 })
    yield sseEvent('two', { id: 'two' })
    yield 'keeps two'
  })
  app.sse('/json', async function* () {
    yield sseEvent({ id: 7, tags: ['a', 'b'], nested: { ok: true } }, { event: 'row' })
    yield [1, 2, 3]
  })
  app.sse('/retry', (_req, stream) => {
    stream.send('with retry', { retry: 1234 })
    stream.end()
  })
  // Each connection sends three events with increasing ids after the client's last one,
  // then ends: EventSource reconnects and sends Last-Event-ID.
  app.sse('/resume', async function* (req) {
    lastIds.push(req.lastEventId)
    const start = req.lastEventId === null ? 0 : Number(req.lastEventId)
    yield sseEvent('hello', { retry: 50 })
    for (let i = start + 1; i <= start + 3; i++) yield sseEvent(`n${i}`, { id: i })
  })
  app.sse('/injection/yield', async function* () {
    yield INJECTION
    yield sseEvent(undefined, { event: 'done' })
  })
  app.sse('/injection/send', (_req, stream) => {
    stream.send(INJECTION)
    stream.send(undefined, { event: 'done' })
  })
  injection = app.channel('injection')
  app.sse('/injection/channel', injection)
  // A plain object is data whatever its keys; fields come only from options or sseEvent().
  app.sse('/explicit/send', (_req, stream) => {
    stream.send({ event: 'x', data: 1 })
    stream.send({ n: 1 }, { event: 'named', id: 'e7' })
    stream.send(sseEvent('tagged', { event: 'tagged', id: 8, retry: 900 }))
    stream.end()
  })
  app.sse('/explicit/yield', async function* () {
    yield { event: 'x', data: 1 }
    yield sseEvent({ n: 1 }, { event: 'named', id: 'e7' })
    yield sseEvent('tagged', { event: 'tagged', id: 8, retry: 900 })
  })
  explicit = app.channel('explicit')
  app.sse('/explicit/channel', explicit)
  app.sse('/explicit/typo', (_req, stream) => {
    let code = 'none'
    try {
      // @ts-expect-error `evnt` is not an option
      stream.send('typo', { evnt: 'x' })
    } catch (err) {
      code = err instanceof RatError ? err.code : 'not a RatError'
    }
    stream.send(code)
    stream.end()
  })
})

describe('events through EventSource', () => {
  test('named events reach their listeners, unnamed ones onmessage', async () => {
    const es = open(url('/named'))
    const got = await collect(es, { types: ['greeting', 'farewell', 'ping', 'message'], count: 4 })
    expect(got).toEqual([
      { type: 'greeting', data: 'hello', lastEventId: '' },
      { type: 'farewell', data: 'bye', lastEventId: 'f1' },
      // A name without data is still dispatched (it is sent with an empty data line).
      { type: 'ping', data: '', lastEventId: '' },
      // The eventsource package reports only the event's own id here (the spec would
      // repeat 'f1'); what matters is that the server sent no empty id (see below).
      { type: 'message', data: 'plain message', lastEventId: '' },
    ])
  })

  test('multi-line data with LF, CRLF or CR arrives as one event joined by LF', async () => {
    const es = open(url('/multiline'))
    const got = await collect(es, { count: 4 })
    expect(got.map((e) => e.data)).toEqual([
      'lf one\nlf two',
      'crlf one\ncrlf two',
      'cr one\ncr two',
      'string a\nstring b\nstring c',
    ])
  })

  test('ids reach EventSource as lastEventId', async () => {
    const es = open(url('/ids'))
    const got = await collect(es, { count: 2 })
    expect(got.map((e) => [e.data, e.lastEventId])).toEqual([
      ['one', '1'],
      ['two', 'two'],
    ])
  })

  test('object data is sent as JSON', async () => {
    const es = open(url('/json'))
    const got = await collect(es, { types: ['row', 'message'], count: 2 })
    expect(got[0].type).toBe('row')
    expect(JSON.parse(got[0].data)).toEqual({ id: 7, tags: ['a', 'b'], nested: { ok: true } })
    expect(JSON.parse(got[1].data)).toEqual([1, 2, 3])
  })
})

test.each(['/injection/yield', '/injection/send', '/injection/channel'])(
  '%s: a string shaped like SSE fields reaches EventSource as one message event holding it',
  async (path) => {
    const es = open(url(path))
    const got = collect(es, { types: ['message', 'admin', 'done'], count: 2 })
    let ids = ['', '']
    if (path === '/injection/channel') {
      await waitFor('the subscriber', () => injection.subscribers === 1)
      ids = [injection.publish(INJECTION), injection.publish(undefined, { event: 'done' })]
    }
    // No `admin` event, no id 666: the data is the string, newlines and all (the parser
    // drops only the LF it adds after the last data line).
    expect(await got).toEqual([
      { type: 'message', data: INJECTION, lastEventId: ids[0] },
      { type: 'done', data: '', lastEventId: ids[1] },
    ])
  },
)

describe('the event form is explicit', () => {
  test.each(['/explicit/send', '/explicit/yield', '/explicit/channel'])(
    '%s: a plain object is JSON data; options and sseEvent() give the named event its id',
    async (path) => {
      const es = open(url(path))
      const got = collect(es, { types: ['message', 'x', 'named', 'tagged'], count: 3 })
      let ids = ['', 'e7', '8']
      if (path === '/explicit/channel') {
        await waitFor('the subscriber', () => explicit.subscribers === 1)
        const first = explicit.publish({ event: 'x', data: 1 })
        expect(explicit.publish({ n: 1 }, { event: 'named', id: 'e7' })).toBe('e7')
        expect(explicit.publish(sseEvent('tagged', { event: 'tagged', id: 8, retry: 900 }))).toBe('8')
        ids = [first, 'e7', '8']
      }
      expect(await got).toEqual([
        { type: 'message', data: '{"event":"x","data":1}', lastEventId: ids[0] },
        { type: 'named', data: '{"n":1}', lastEventId: 'e7' },
        { type: 'tagged', data: 'tagged', lastEventId: '8' },
      ])
    },
  )

  test('on the wire: the object is one data line, the fields are fields', async () => {
    const body = await (await fetch(url('/explicit/send'))).text()
    expect(body).toBe(
      'data: {"event":"x","data":1}\n\n' + 'event: named\nid: e7\ndata: {"n":1}\n\n' + 'event: tagged\nid: 8\nretry: 900\ndata: tagged\n\n',
    )
  })

  test('an unknown option is refused at run time with ERR_INVALID_ARGUMENT (and at compile time)', async () => {
    const events = parseSse(await (await fetch(url('/explicit/typo'))).text())
    expect(events.map((e) => e.data)).toEqual(['ERR_INVALID_ARGUMENT'])
  })
})

test('an event without id sends no id line, so a client keeps the previous id', async () => {
  const body = await (await fetch(url('/ids'))).text()
  expect(body.match(/^id:.*$/gm)).toEqual(['id: 1', 'id: two'])
  expect(parseSse(body).map((e) => [e.data, e.id])).toEqual([
    ['one', '1'],
    ['two', 'two'],
    ['keeps two', 'two'],
  ])
})

test('retry is written as a retry field with the event', async () => {
  const res = await fetch(url('/retry'))
  expect(res.headers.get('content-type')).toBe('text/event-stream')
  const body = await res.text()
  expect(body).toMatch(/^retry: ?1234$/m)
  expect(parseSse(body)).toEqual([{ event: 'message', data: 'with retry', id: '', retry: 1234 }])
})

test('after the server ends the stream, EventSource reconnects (after retry) with the last id it saw', async () => {
  lastIds.length = 0
  const t0 = Date.now()
  const es = open(url('/resume'))
  const got = await collect(es, { count: 10, timeoutMs: 8000 })
  es.close()
  // Two reconnections: with EventSource's default 3 s delay this would take 6 s; the
  // server's `retry: 50` must have been applied.
  expect(Date.now() - t0).toBeLessThan(3000)
  // hello n1 n2 n3 | hello n4 n5 n6 | hello n7 ...
  expect(got.filter((e) => e.data !== 'hello').map((e) => e.data)).toEqual(['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7'])
  await waitFor('three connections', () => lastIds.length >= 3)
  expect(lastIds.slice(0, 3)).toEqual([null, '3', '6'])
})

test('a lastEventId query parameter reaches req.lastEventId (clients that cannot set headers)', async () => {
  lastIds.length = 0
  const res = await fetch(url('/resume?lastEventId=41'))
  const events = parseSse(await res.text())
  expect(events.map((e) => e.data)).toEqual(['hello', 'n42', 'n43', 'n44'])
  expect(lastIds).toEqual(['41'])
})

test('an idle stream gets heartbeat comments at the configured interval', async () => {
  const s = await startApp((a) => a.sse('/idle', (_req, stream) => void stream.start()), { heartbeatMs: 100 })
  const client = new RawSseClient(s.port, '/idle')
  expect((await client.head).headers['content-type']).toBe('text/event-stream')
  await waitFor('two heartbeats', () => client.parser.comments.length >= 2, { timeoutMs: 3000 })
  expect(client.events).toEqual([])
  client.destroy()
})
