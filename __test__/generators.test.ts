// What an SSE generator's yields become on the wire, how `return` ends the stream, and how
// a client disconnect reaches the handler: the generator's `finally`, `req.signal`, and
// writes that report closed.
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { sseEvent, type RatRequest, type SseStream } from '../ts/index.js'
import { startApp } from './support/app.js'
import { parseSse, RawSseClient } from './support/sse.js'
import { sleep, waitFor, within } from './support/wait.js'

/** Times (Date.now()) at which handlers observed things, keyed by test. */
const seen = new Map<string, number>()
const note = (key: string) => seen.set(key, Date.now())

let afterReturn = false
let lateWrite: { result: boolean; closed: boolean } | null = null

const { url, port } = await startApp((app) => {
  app.sse('/string', async function* () {
    yield 'hello'
    yield 'two\nlines'
  })
  app.sse('/frame-shaped', async function* () {
    yield 'event: custom\ndata: raw frame\nid: r1\n\n'
    yield ': a comment frame\n\n'
    yield 'data: no blank line'
  })
  app.sse('/objects', async function* () {
    yield { a: 1, b: [true, null] }
    yield { data: 'x', other: 'not an event field' }
    yield { event: 'looks like', data: 'an event' }
    yield 42
  })
  app.sse('/events', async function* () {
    yield sseEvent({ n: 1 }, { event: 'tick', id: 'e1', retry: 2500 })
    yield sseEvent(undefined, { event: 'only-name' })
    yield 'only data'
  })
  app.sse('/return', async function* () {
    yield 'before'
    if (Date.now() > 0) return
    afterReturn = true
    yield 'after'
  })
  app.sse('/sync-generator', function* () {
    for (let i = 0; i < 3; i++) yield `s${i}`
  })
  app.sse('/endless/:key', async function* (req) {
    const key = req.params.key
    req.signal.addEventListener('abort', () => note(`${key}:signal`))
    try {
      for (let i = 0; i < 400; i++) {
        yield sseEvent(`tick ${i}`, { id: i })
        await sleep(25)
      }
    } finally {
      note(`${key}:finally`)
    }
  })
  // A generator blocked on a long await (no yields) when the client leaves.
  app.sse('/idle-generator', async function* (req) {
    try {
      yield 'waiting'
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 10_000)
        req.signal.addEventListener('abort', () => {
          clearTimeout(t)
          resolve()
        })
      })
      yield 'woke'
    } finally {
      note('idle:finally')
    }
  })
  app.sse('/interval', (req: RatRequest, stream: SseStream) => {
    let n = 0
    const timer = setInterval(() => {
      stream.send(`i${n++}`)
      if (n > 400) clearInterval(timer)
    }, 25)
    req.signal.addEventListener('abort', () => {
      note('interval:signal')
      clearInterval(timer)
      lateWrite = { result: stream.send('after disconnect'), closed: stream.closed }
    })
  })
})

const body = async (path: string) => {
  const res = await fetch(url(path))
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('text/event-stream')
  return res.text()
}

describe('what a yield becomes', () => {
  test('a string is sent as data, one data line per line', async () => {
    expect(await body('/string')).toBe('data: hello\n\ndata: two\ndata: lines\n\n')
  })

  test('a string shaped like SSE frames is data too: the client gets the text itself', async () => {
    const text = await body('/frame-shaped')
    // Every line a data line, the empty ones too (a value-less `data:`).
    expect(text).toBe(
      'data: event: custom\ndata: data: raw frame\ndata: id: r1\ndata:\ndata:\n\n' +
        'data: : a comment frame\ndata:\ndata:\n\n' +
        'data: data: no blank line\n\n',
    )
    expect(parseSse(text)).toEqual([
      { event: 'message', data: 'event: custom\ndata: raw frame\nid: r1\n\n', id: '', retry: undefined },
      { event: 'message', data: ': a comment frame\n\n', id: '', retry: undefined },
      { event: 'message', data: 'data: no blank line', id: '', retry: undefined },
    ])
  })

  test('other values, plain objects of any keys included, are sent as JSON data', async () => {
    const events = parseSse(await body('/objects'))
    expect(events.map((e) => JSON.parse(e.data))).toEqual([
      { a: 1, b: [true, null] },
      { data: 'x', other: 'not an event field' },
      { event: 'looks like', data: 'an event' },
      42,
    ])
    expect(events.every((e) => e.event === 'message')).toBe(true)
  })

  test('sseEvent(data, { event, id, retry }) is sent as a full event', async () => {
    const text = await body('/events')
    expect(parseSse(text)).toEqual([
      { event: 'tick', data: '{"n":1}', id: 'e1', retry: 2500 },
      // A name alone must still dispatch: EventSource drops events without a data line.
      { event: 'only-name', data: '', id: 'e1', retry: undefined },
      { event: 'message', data: 'only data', id: 'e1', retry: undefined },
    ])
  })

  test('return ends the stream and nothing after it runs', async () => {
    expect(parseSse(await body('/return')).map((e) => e.data)).toEqual(['before'])
    expect(afterReturn).toBe(false)
  })

  test('a sync generator works too', async () => {
    expect(parseSse(await body('/sync-generator')).map((e) => e.data)).toEqual(['s0', 's1', 's2'])
  })
})

describe('client disconnect', () => {
  test('runs the generator finally and aborts req.signal within 1 s', async () => {
    const client = new RawSseClient(port, '/endless/gen')
    await client.waitForEvents(3)
    const left = Date.now()
    client.destroy()
    await waitFor('generator finally', () => seen.has('gen:finally'), { timeoutMs: 3000 })
    await waitFor('req.signal abort', () => seen.has('gen:signal'), { timeoutMs: 3000 })
    expect(seen.get('gen:finally')! - left).toBeLessThan(1000)
    expect(seen.get('gen:signal')! - left).toBeLessThan(1000)
  })

  test('reaches a generator that is awaiting, not yielding', async () => {
    const client = new RawSseClient(port, '/idle-generator')
    await client.waitForEvents(1)
    const left = Date.now()
    client.destroy()
    await waitFor('generator finally', () => seen.has('idle:finally'), { timeoutMs: 3000 })
    expect(seen.get('idle:finally')! - left).toBeLessThan(1000)
  })

  test('aborts req.signal of a (req, stream) handler; later writes report closed', async () => {
    const client = new RawSseClient(port, '/interval')
    await client.waitForEvents(2)
    const left = Date.now()
    client.destroy()
    await waitFor('req.signal abort', () => seen.has('interval:signal'), { timeoutMs: 3000 })
    expect(seen.get('interval:signal')! - left).toBeLessThan(1000)
    expect(lateWrite).toEqual({ result: false, closed: true })
  })

  test('a client that half-closes (sends FIN) counts as gone', async () => {
    const client = new RawSseClient(port, '/endless/half')
    await client.waitForEvents(2)
    const left = Date.now()
    client.socket.end()
    await waitFor('req.signal abort', () => seen.has('half:signal'), { timeoutMs: 3000 })
    expect(seen.get('half:signal')! - left).toBeLessThan(1000)
    await within(3000, 'server closing the connection', client.ended)
  })

  test('an aborted fetch (undici) counts as a disconnect too', async () => {
    const ac = new AbortController()
    const res = await fetch(url('/endless/fetch'), { signal: ac.signal })
    const reader = res.body!.getReader()
    const first = await within(3000, 'first chunk', reader.read())
    expect(new TextDecoder().decode(first.value)).toContain('tick 0')
    const left = Date.now()
    ac.abort()
    await reader.cancel().catch(() => {})
    await waitFor('generator finally', () => seen.has('fetch:finally'), { timeoutMs: 3000 })
    expect(seen.get('fetch:finally')! - left).toBeLessThan(1000)
  })
})
