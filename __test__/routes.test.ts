// Plain routes: methods, return-value conversions, reply helpers, request fields (params,
// query, headers, body, remote address), engine answers (404, 405, 413, HEAD).
import { fetch } from 'undici'
import { describe, expect, expectTypeOf, test } from 'vitest'
import { html, json, redirect, reply, sseEvent, text } from '../ts/index.js'
import { startApp } from './support/app.js'
import { rawExchange, rawRequest } from './support/raw.js'

const seenRequests: Array<Record<string, unknown>> = []

const { url, port, app } = await startApp((app) => {
  app.get('/text', () => 'plain text')
  app.get('/object', () => ({ status: 'success', n: 1 }))
  app.get('/array', () => [1, 'two'])
  app.get('/nothing', () => undefined)
  app.get('/bytes', () => Buffer.from([0, 1, 2]))
  app.get('/constant', 'a constant')
  app.get('/async', async () => {
    await new Promise((r) => setTimeout(r, 5))
    return { async: true }
  })
  app.text('/text-route', () => 'from app.text')
  app.html('/page', '<h1>hi</h1>')
  app.html('/page-fn', (req) => `<p>${req.query.name}</p>`)

  app.post('/items', async (req) => ({ method: req.method, got: await req.json() }))
  app.put('/items/:id', async (req) => ({ method: req.method, id: req.params.id, text: await req.text() }))
  app.patch('/items/:id', (req) => ({ method: req.method, id: req.params.id, bytes: req.body.length }))
  app.delete('/items/:id', (req) => ({ method: req.method, id: req.params.id }))
  app.route('OPTIONS', '/custom-options', () => reply(null, { status: 204, headers: { 'x-options': 'custom' } }))

  app.get('/reply/json', () => json({ created: true }, { status: 201, headers: { 'x-extra': '1' } }))
  app.get('/reply/text', () => text('teapot', { status: 418 }))
  app.get('/reply/html', () => html('<b>x</b>', { status: 202 }))
  app.get('/reply/raw', () => reply(Buffer.from('raw bytes'), { status: 200, headers: { 'content-type': 'application/x-raw' } }))
  app.get('/reply/cookies', () =>
    reply('with cookies', { headers: { 'set-cookie': ['a=1; Path=/', 'b=2; HttpOnly'], 'cache-control': 'no-store' } }),
  )
  app.get('/reply/redirect', () => redirect('/text'))
  app.get('/reply/redirect-301', () => redirect('https://example.invalid/x', 301))

  app.post('/json-body', async (req) => ({ parsed: await req.json() }))

  app.get('/users/:id', (req) => ({ id: req.params.id }))
  app.get('/angle/<name>', (req) => ({ name: req.params.name }))
  app.get('/things/<int:id>', (req) => ({ id: req.params.id, type: typeof req.params.id }))
  app.get('/things/:slug', (req) => ({ slug: req.params.slug }))
  app.get('/at/<float:x>', (req) => ({ x: req.params.x }))
  app.get('/files/<path:rest>', (req) => ({ rest: req.params.rest }))
  app.get('/typed/<int:id>/:name', (req) => {
    expectTypeOf(req.params).toEqualTypeOf<{ id: number; name: string }>()
    return { ...req.params }
  })

  app.get('/echo', (req) => {
    seenRequests.push({
      method: req.method,
      path: req.path,
      url: req.url,
      query: req.query,
      headers: req.headers,
      custom: req.header('X-Custom-Header'),
      remoteAddress: req.remoteAddress,
      remotePort: req.remotePort,
      lastEventId: req.lastEventId,
    })
    return 'ok'
  })
  app.get('/only-get', () => 'get')
  app.post('/only-get', () => 'post')

  // The seeds' Python-style names.
  app.registerRoute('GET', '/seed/plain', () => ({ seed: true }))
  app.registerSseRoute('POST', '/seed/sse', async function* (req) {
    yield sseEvent(await req.text(), { event: 'got' })
  })
  app.registerChunkedRoute('GET', '/seed/chunked', async function* () {
    yield 'seed '
    yield 'chunks'
  })
})

const big = await startApp((a) => {
  a.post('/upload', (req) => ({ bytes: req.body.length }))
}, { maxBodyBytes: 1024 })

describe('methods and return values', () => {
  test.each([
    ['/text', 200, 'text/plain; charset=utf-8', 'plain text'],
    ['/object', 200, 'application/json', '{"status":"success","n":1}'],
    ['/array', 200, 'application/json', '[1,"two"]'],
    ['/bytes', 200, 'application/octet-stream', '\u0000\u0001\u0002'],
    ['/constant', 200, 'text/plain; charset=utf-8', 'a constant'],
    ['/async', 200, 'application/json', '{"async":true}'],
    ['/text-route', 200, 'text/plain; charset=utf-8', 'from app.text'],
    ['/page', 200, 'text/html; charset=utf-8', '<h1>hi</h1>'],
    ['/page-fn?name=zed', 200, 'text/html; charset=utf-8', '<p>zed</p>'],
  ])('GET %s → %i %s', async (path, status, type, body) => {
    const res = await fetch(url(path))
    expect(res.status).toBe(status)
    expect(res.headers.get('content-type')).toBe(type)
    expect(await res.text()).toBe(body)
  })

  test('a handler returning undefined gives 204 with no body', async () => {
    const res = await fetch(url('/nothing'))
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
  })

  test('POST, PUT, PATCH and DELETE reach their handlers with the body', async () => {
    const post = await fetch(url('/items'), { method: 'POST', body: JSON.stringify({ name: 'x' }) })
    expect(await post.json()).toEqual({ method: 'POST', got: { name: 'x' } })
    const put = await fetch(url('/items/3'), { method: 'PUT', body: 'put body' })
    expect(await put.json()).toEqual({ method: 'PUT', id: '3', text: 'put body' })
    const patch = await fetch(url('/items/4'), { method: 'PATCH', body: Buffer.alloc(10) })
    expect(await patch.json()).toEqual({ method: 'PATCH', id: '4', bytes: 10 })
    const del = await fetch(url('/items/5'), { method: 'DELETE' })
    expect(await del.json()).toEqual({ method: 'DELETE', id: '5' })
  })

  test('app.route registers any method', async () => {
    const res = await fetch(url('/custom-options'), { method: 'OPTIONS' })
    expect(res.status).toBe(204)
    expect(res.headers.get('x-options')).toBe('custom')
  })
})

describe('reply helpers', () => {
  test('json() with status and extra headers', async () => {
    const res = await fetch(url('/reply/json'))
    expect(res.status).toBe(201)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(res.headers.get('x-extra')).toBe('1')
    expect(await res.json()).toEqual({ created: true })
  })

  test('text(), html() and reply() keep their status and content type', async () => {
    const t = await fetch(url('/reply/text'))
    expect([t.status, t.headers.get('content-type'), await t.text()]).toEqual([418, 'text/plain; charset=utf-8', 'teapot'])
    const h = await fetch(url('/reply/html'))
    expect([h.status, h.headers.get('content-type'), await h.text()]).toEqual([202, 'text/html; charset=utf-8', '<b>x</b>'])
    const r = await fetch(url('/reply/raw'))
    expect([r.status, r.headers.get('content-type'), await r.text()]).toEqual([200, 'application/x-raw', 'raw bytes'])
  })

  test('two Set-Cookie headers both arrive', async () => {
    const res = await fetch(url('/reply/cookies'))
    expect(res.headers.getSetCookie()).toEqual(['a=1; Path=/', 'b=2; HttpOnly'])
    expect(res.headers.get('cache-control')).toBe('no-store')
  })

  test('redirect() sends Location with 302, or the given status', async () => {
    const res = await fetch(url('/reply/redirect'), { redirect: 'manual' })
    expect(res.status).toBe(302)
    expect(res.headers.get('location')).toBe('/text')
    const followed = await fetch(url('/reply/redirect'))
    expect(await followed.text()).toBe('plain text')
    const perm = await fetch(url('/reply/redirect-301'), { redirect: 'manual' })
    expect([perm.status, perm.headers.get('location')]).toEqual([301, 'https://example.invalid/x'])
  })
})

describe('request bodies', () => {
  test('req.json() parses JSON', async () => {
    const res = await fetch(url('/json-body'), { method: 'POST', body: '{"a":[1,2]}' })
    expect(await res.json()).toEqual({ parsed: { a: [1, 2] } })
  })

  test('req.json() on invalid JSON answers 400 with a message saying why', async () => {
    const res = await fetch(url('/json-body'), { method: 'POST', body: '{"a": nope}' })
    expect(res.status).toBe(400)
    expect(res.headers.get('content-type')).toBe('application/json')
    const body = (await res.json()) as { error: string; status: number }
    expect(body.status).toBe(400)
    expect(body.error).toMatch(/^invalid JSON body: /)
    expect(body.error.length).toBeGreaterThan('invalid JSON body: '.length)
  })

  test('a body over maxBodyBytes is refused with 413 (declared length)', async () => {
    const ok = await fetch(big.url('/upload'), { method: 'POST', body: Buffer.alloc(1024) })
    expect(await ok.json()).toEqual({ bytes: 1024 })
    const res = await fetch(big.url('/upload'), { method: 'POST', body: Buffer.alloc(1025) })
    expect(res.status).toBe(413)
    expect(((await res.json()) as { error: string }).error).toContain('1024')
  })

  test('a chunked body over maxBodyBytes is refused with 413 too', async () => {
    // An async iterable body has no known length: undici sends it chunked.
    const body = (async function* () {
      yield Buffer.alloc(800)
      yield Buffer.alloc(800)
    })()
    const res = await fetch(big.url('/upload'), { method: 'POST', body, duplex: 'half' })
    expect(res.status).toBe(413)
    await res.text()
  })
})

describe('path parameters', () => {
  test.each([
    ['/users/42', { id: '42' }],
    ['/angle/ann', { name: 'ann' }],
    ['/things/7', { id: 7, type: 'number' }],
    ['/things/seven', { slug: 'seven' }],
    ['/things/-3', { id: -3, type: 'number' }],
    ['/at/2.5', { x: 2.5 }],
    ['/files/a/b/c.txt', { rest: 'a/b/c.txt' }],
    ['/users/J%C3%B6rg%20K', { id: 'Jörg K' }],
    ['/users/a%2Fb', { id: 'a/b' }],
    ['/typed/12/bob', { id: 12, name: 'bob' }],
  ])('%s → %j', async (path, params) => {
    const res = await fetch(url(path))
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual(params)
  })
})

describe('query, headers and the peer', () => {
  test('query parameters are decoded, repeated keys become arrays', async () => {
    await fetch(url('/echo?a=1&a=2&b=x%20y&c=%C3%A9&empty='))
    const q = seenRequests.at(-1)!.query
    expect(q).toEqual({ a: ['1', '2'], b: 'x y', c: 'é', empty: '' })
    expect(seenRequests.at(-1)!.path).toBe('/echo')
    expect(seenRequests.at(-1)!.url).toBe('/echo?a=1&a=2&b=x%20y&c=%C3%A9&empty=')
  })

  test('header names are lower-case; repeated headers become arrays; remote address is the peer', async () => {
    const client = rawRequest(port, '/echo', {
      headers: { 'X-Custom-Header': 'Value', 'X-Twice': 'one', 'x-twice': 'two', 'Last-Event-ID': '17' },
    })
    const head = await client.head
    expect(head.status).toBe(200)
    const seen = seenRequests.at(-1)!
    const headers = seen.headers as Record<string, string | string[]>
    expect(headers['x-custom-header']).toBe('Value')
    expect(headers['X-Custom-Header']).toBeUndefined()
    expect(headers['x-twice']).toEqual(['one', 'two'])
    expect(Object.keys(headers).every((k) => k === k.toLowerCase())).toBe(true)
    expect(seen.custom).toBe('Value')
    expect(seen.lastEventId).toBe('17')
    expect(seen.remoteAddress).toBe('127.0.0.1')
    expect(seen.remotePort).toBe(client.socket.localPort)
    client.destroy()
  })
})

test("the seeds' registerRoute / registerSseRoute / registerChunkedRoute / getPerformanceMetrics", async () => {
  expect(await (await fetch(url('/seed/plain'))).json()).toEqual({ seed: true })
  const sse = await fetch(url('/seed/sse'), { method: 'POST', body: 'posted' })
  expect(sse.headers.get('content-type')).toBe('text/event-stream')
  expect(await sse.text()).toBe('event: got\ndata: posted\n\n')
  expect((await fetch(url('/seed/sse'))).status).toBe(405)
  expect(await (await fetch(url('/seed/chunked'))).text()).toBe('seed chunks')
  const m = app.getPerformanceMetrics()
  expect(Object.keys(m).sort()).toEqual(Object.keys(app.metrics()).sort())
  expect(m.totalRequests).toBeGreaterThan(0)
  expect(m.bytesSent).toBeGreaterThan(0)
})

describe('answers from the engine', () => {
  test('404 for an unknown path, with a JSON body naming it', async () => {
    const res = await fetch(url('/no/such/path'))
    expect(res.status).toBe(404)
    const body = (await res.json()) as { error: string; status: number }
    expect(body.status).toBe(404)
    expect(body.error).toContain('/no/such/path')
  })

  test('404 for a typed parameter that does not parse', async () => {
    const res = await fetch(url('/at/abc'))
    expect(res.status).toBe(404)
  })

  test('405 with Allow for a known path and another method', async () => {
    const res = await fetch(url('/only-get'), { method: 'DELETE' })
    expect(res.status).toBe(405)
    const allow = res.headers.get('allow')!.split(/,\s*/).sort()
    expect(allow).toEqual(['GET', 'HEAD', 'POST'])
    expect(((await res.json()) as { error: string }).error).toContain('DELETE')
  })

  test('HEAD answers like GET without a body (checked on the wire)', async () => {
    const out = await rawExchange(
      port,
      'HEAD /object HTTP/1.1\r\nhost: x\r\n\r\nGET /text HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
    )
    const responses = out.split(/(?=HTTP\/1\.1 )/)
    expect(responses).toHaveLength(2)
    const [head, get] = responses
    expect(head).toMatch(/^HTTP\/1\.1 200 /)
    expect(head.toLowerCase()).toContain('content-type: application/json')
    expect(head.endsWith('\r\n\r\n')).toBe(true)
    expect(get).toMatch(/^HTTP\/1\.1 200 /)
    expect(get.endsWith('\r\n\r\nplain text')).toBe(true)
  })

  test('a malformed request line gets 400 and the server keeps serving', async () => {
    const out = await rawExchange(port, 'THIS IS NOT HTTP\r\n\r\n')
    expect(out).toMatch(/^HTTP\/1\.1 400 /)
    expect((await fetch(url('/text'))).status).toBe(200)
  })

  test('HTTP/2 without TLS (prior knowledge) is served too', async () => {
    const { execFile } = await import('node:child_process')
    const out = await new Promise<string>((resolve, reject) =>
      execFile('curl', ['-sS', '--http2-prior-knowledge', '-w', ' %{http_version}', url('/object')], { timeout: 10_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    )
    expect(out).toBe('{"status":"success","n":1} 2')
  })
})
