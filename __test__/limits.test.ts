// createApp({ limits }): the engine refuses before any JS runs (slow heads, stalled bodies,
// oversized heads and URLs, too many connections or streams) and times out plain handlers
// that never answer (504, req.signal aborts); each refusal is counted, nothing leaks.
import net from 'node:net'
import { fetch } from 'undici'
import { expect, test } from 'vitest'
import { startApp } from './support/app.js'
import { RawSseClient } from './support/sse.js'
import { waitFor } from './support/wait.js'

/** Sends `raw` on a new connection and resolves with everything the server sent until it closed. */
function exchange(port: number, raw: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port })
    let got = ''
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`still open after ${timeoutMs} ms; got ${JSON.stringify(got)}`))
    }, timeoutMs)
    s.setEncoding('latin1')
    s.on('data', (d: string) => (got += d))
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(timer)
      resolve(got)
    })
    if (raw) s.write(raw)
  })
}

test('handlerTimeoutMs: a plain handler that never answers gets 504 and its signal aborts; streams are exempt', async () => {
  let aborted = 0
  const { app, url } = await startApp(
    (a) => {
      a.get('/never', (req) => new Promise(() => req.signal.addEventListener('abort', () => aborted++)))
      a.sse('/slow-start', async function* () {
        await new Promise((r) => setTimeout(r, 400))
        yield 'late but fine'
      })
    },
    { limits: { handlerTimeoutMs: 200 } },
  )
  const res = await fetch(url('/never'))
  expect(res.status).toBe(504)
  expect((await res.json()) as unknown).toMatchObject({ status: 504 })
  await waitFor('req.signal to abort', () => aborted === 1)
  expect(await (await fetch(url('/slow-start'))).text()).toBe('data: late but fine\n\n')
  expect(app.metrics().handlerTimeouts).toBe(1)
})

test('maxStreamsPerIp and a route maxStreams answer 429 with Retry-After, and free up when a stream ends', async () => {
  const { app, port, url } = await startApp(
    (a) => {
      const ch = a.channel('limited')
      a.sse('/events', ch)
      a.sse('/solo', ch, { maxStreams: 1 })
      a.get('/plain', () => 'plain')
    },
    { limits: { maxStreamsPerIp: 2 } },
  )
  const solo = new RawSseClient(port, '/solo')
  await solo.head
  const second = await fetch(url('/solo'))
  expect(second.status).toBe(429)
  expect(second.headers.get('retry-after')).toBe('10')
  const other = new RawSseClient(port, '/events')
  await other.head
  expect((await fetch(url('/events'))).status).toBe(429) // two per IP
  expect(await (await fetch(url('/plain'))).text()).toBe('plain') // not a stream
  solo.destroy()
  await waitFor('the stream to end', () => app.metrics().activeStreams === 1)
  const again = new RawSseClient(port, '/solo')
  expect((await again.head).status).toBe(200)
  expect(app.metrics().refusedStreams).toBe(2)
  again.destroy()
  other.destroy()
  await waitFor('no streams', () => app.metrics().activeStreams === 0)
})

test('headerTimeoutMs closes a connection whose head is too slow; bodyTimeoutMs answers 408', async () => {
  const { app, port } = await startApp((a) => a.post('/echo', async (req) => await req.text()), {
    limits: { headerTimeoutMs: 300, bodyTimeoutMs: 300 },
  })
  expect(await exchange(port, 'GET /echo HTTP/1.1\r\nHost: x\r\n')).toBe('')
  expect(app.metrics().headerTimeouts).toBe(1)
  const stalled = await exchange(port, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc')
  expect(stalled).toMatch(/^HTTP\/1\.1 408 /)
  expect(app.metrics().bodyTimeouts).toBe(1)
  await waitFor('connections counted out', () => app.metrics().activeConnections === 0)
})

test('maxHeaderBytes answers 431 and maxUrlBytes 414', async () => {
  const { app, port } = await startApp((a) => a.get('/x', () => 'x'), { limits: { maxHeaderBytes: 1024, maxUrlBytes: 100 } })
  expect(await exchange(port, `GET /x HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(2000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 /)
  expect(await exchange(port, `GET /x?${'q'.repeat(200)} HTTP/1.1\r\nHost: x\r\n\r\n`)).toMatch(/^HTTP\/1\.1 414 /)
  expect(await exchange(port, `GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200 /)
  expect(app.metrics().rejectedRequests).toBe(2)
})

test('maxConnections: past it a new connection gets 503 and is closed', async () => {
  const { app, port } = await startApp((a) => a.get('/x', () => 'x'), { limits: { maxConnections: 1 } })
  const held = net.connect({ host: '127.0.0.1', port })
  await new Promise((r) => held.once('connect', r))
  await waitFor('one connection', () => app.metrics().activeConnections === 1)
  expect(await exchange(port, '')).toMatch(/^HTTP\/1\.1 503 /)
  expect(app.metrics().refusedConnections).toBe(1)
  held.destroy()
  await waitFor('no connections', () => app.metrics().activeConnections === 0)
  expect(await exchange(port, 'GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /)
})

test('auth: static bearer tokens and API keys refuse a channel route with 401 before it subscribes, no JS', async () => {
  let hookCalls = 0
  const { app, port, url } = await startApp(
    (a) => {
      a.sse('/admin/feed', a.channel('admin'))
      a.get('/open', () => 'open')
      a.use('/other', () => void hookCalls++)
    },
    { auth: [{ prefix: '/admin', bearer: ['s3cret'], apiKeys: ['k1'] }] },
  )
  const refused = await fetch(url('/admin/feed'), { headers: { authorization: 'Bearer nope' } })
  expect(refused.status).toBe(401)
  expect(refused.headers.get('www-authenticate')).toBe('Bearer')
  expect(app.channel('admin').subscribers).toBe(0)
  expect(await (await fetch(url('/open'))).text()).toBe('open')
  const byToken = new RawSseClient(port, '/admin/feed', { headers: { authorization: 'Bearer s3cret' } })
  const byKey = new RawSseClient(port, '/admin/feed', { headers: { 'x-api-key': 'k1' } })
  expect((await byToken.head).status).toBe(200)
  expect((await byKey.head).status).toBe(200)
  await waitFor('two subscribers', () => app.channel('admin').subscribers === 2)
  expect(app.metrics().unauthorized).toBe(1)
  expect(hookCalls).toBe(0)
  byToken.destroy()
  byKey.destroy()
})

test('maxStreamAgeMs ends a stream cleanly; EventSource reconnects and resumes without a gap', async () => {
  const { EventSource } = await import('eventsource')
  const { app, url } = await startApp((a) => a.sse('/ticks', a.channel('ticks', { history: 100 })), { limits: { maxStreamAgeMs: 300 } })
  const ticks = app.channel('ticks')
  const es = new EventSource(url('/ticks'))
  const got: string[] = []
  let opens = 0
  es.onopen = () => opens++
  es.onmessage = (e) => got.push(e.data)
  try {
    await waitFor('subscribed', () => ticks.subscribers === 1)
    for (let i = 0; i < 12; i++) {
      ticks.publish(String(i))
      await new Promise((r) => setTimeout(r, 60))
    }
    await waitFor('every event', () => got.length >= 12, { timeoutMs: 5000 })
    expect(got).toEqual(Array.from({ length: 12 }, (_, i) => String(i)))
    expect(opens).toBeGreaterThanOrEqual(2)
  } finally {
    es.close()
  }
})
