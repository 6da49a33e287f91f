// Hooks (`app.use`) before plain, SSE, chunked and channel routes: refusing with HttpError
// or a Reply before any byte of the response, req.locals, async hooks, path scopes, order,
// failures through onError; and `app.onError` shaping error responses.
import { EventSource } from 'eventsource'
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { createApp, HttpError, json, RatError, sseEvent, text, type Channel, type RatRequest } from '../ts/index.js'
import { startApp } from './support/app.js'
import { collect, parseSse, RawSseClient } from './support/sse.js'
import { sleep, waitFor, within } from './support/wait.js'

/** A hook that refuses without `authorization: Bearer good`, and tells the handler who it is. */
function auth(req: RatRequest): void {
  if (req.header('authorization') !== 'Bearer good') {
    throw new HttpError(401, 'log in first', { headers: { 'www-authenticate': 'Bearer' } })
  }
  req.locals.user = 'ada'
}
const AUTH = { authorization: 'Bearer good' }

const handled: string[] = []
let feed!: Channel
const started = await startApp((app) => {
  feed = app.channel('guarded-feed', { history: 100 })
  app.use('/private', auth)
  app.get('/private/data', (req) => {
    handled.push('plain')
    return { user: req.locals.user }
  })
  app.sse('/private/events', async function* (req) {
    handled.push('sse')
    yield sseEvent(req.locals.user, { event: 'hello' })
  })
  app.chunked('/private/report', async function* (req) {
    handled.push('chunked')
    yield `report for ${String(req.locals.user)}\n`
  })
  app.sse('/private/feed', feed)
})

describe('a hook that refuses', () => {
  test('a plain route: 401 with its header and JSON body; the handler does not run', async () => {
    const res = await fetch(started.url('/private/data'))
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.json()).toEqual({ error: 'log in first', status: 401 })
    const ok = await fetch(started.url('/private/data'), { headers: AUTH })
    expect([ok.status, await ok.json()]).toEqual([200, { user: 'ada' }])
    expect(handled).toEqual(['plain'])
    handled.length = 0
  })

  test('an SSE route: a 401 JSON response, never a started event stream', async () => {
    const res = await fetch(started.url('/private/events'), { headers: { accept: 'text/event-stream' } })
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(res.headers.get('content-type')).not.toContain('text/event-stream')
    expect(await res.json()).toEqual({ error: 'log in first', status: 401 })
    // A raw client sees the whole response: a complete JSON body, no SSE framing.
    const raw = new RawSseClient(started.port, '/private/events')
    const head = await raw.head
    expect(head.status).toBe(401)
    expect(head.headers['content-type']).toBe('application/json')
    expect(head.headers['transfer-encoding']).toBeUndefined()
    const length = Number(head.headers['content-length'])
    await waitFor('the 401 body', () => raw.bodyBytes >= length)
    await sleep(20)
    expect(raw.bodyBytes).toBe(length)
    expect(JSON.parse(raw.body().toString())).toEqual({ error: 'log in first', status: 401 })
    expect(raw.events).toEqual([])
    raw.destroy()
    expect(handled).toEqual([])
    // With credentials the stream starts and the handler sees req.locals.
    const es = new EventSource(started.url('/private/events'), {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...AUTH } }),
    })
    const got = await collect(es, { types: ['hello'], count: 1 })
    es.close()
    expect(got.map((e) => e.data)).toEqual(['ada'])
    expect(handled).toEqual(['sse'])
    handled.length = 0
  })

  test('a chunked route: a 401 JSON response, not a chunked body', async () => {
    const res = await fetch(started.url('/private/report'))
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.json()).toEqual({ error: 'log in first', status: 401 })
    const ok = await fetch(started.url('/private/report'), { headers: AUTH })
    expect([ok.status, await ok.text()]).toEqual([200, 'report for ada\n'])
    expect(handled).toEqual(['chunked'])
    handled.length = 0
  })

  test('a channel route: refused before subscribing; let through, it subscribes and resumes', async () => {
    const res = await fetch(started.url('/private/feed'), { headers: { accept: 'text/event-stream' } })
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.json()).toEqual({ error: 'log in first', status: 401 })
    expect(feed.subscribers).toBe(0)
    expect(feed.metrics().replayed).toBe(0)

    const first = feed.publish(1, { event: 'n' })
    feed.publish(2, { event: 'n' })
    // Resumes after Last-Event-ID, as a channel-served route does.
    const client = new RawSseClient(started.port, '/private/feed', { headers: { ...AUTH, 'last-event-id': first } })
    const head = await client.head
    expect(head.status).toBe(200)
    expect(head.headers['content-type']).toBe('text/event-stream')
    await client.waitForEvents(1)
    await waitFor('the subscriber', () => feed.subscribers === 1)
    feed.publish(3, { event: 'n' })
    const events = await client.waitForEvents(2)
    expect(events.map((e) => e.data)).toEqual(['2', '3'])
    client.destroy()
    await waitFor('the subscriber to leave', () => feed.subscribers === 0)
  })
})

const calls: string[] = []
const base = await startApp((app) => {
  // Registered before the hooks: hooks apply whatever the order.
  app.get('/api', () => 'api root')
  app.get('/api/items/:id', (req) => ({ id: req.params.id, trace: req.locals.trace }))
  app.get('/apix', () => 'not under /api')
  app.get('/other', () => 'other')
  app.get('/:section/list', (req) => `list of ${req.params.section}`)
  app.get('/sync', (req) => ({ microtaskRan: (req.locals.box as { ran: boolean }).ran }))
  app.get('/slow/pass', (req) => ({ waited: req.locals.waited }))
  app.get('/slow/refuse', () => 'never')
  app.sse('/slow/events', (req, stream) => {
    stream.send(String(req.locals.waited))
    stream.end()
  })
  app.get('/limited', () => 'ok')
  app.get('/odd', () => 'never')
  app.use((req) => {
    calls.push(`global ${req.path}`)
    req.locals.trace = ['global']
  })
  app.use('/api', (req) => {
    calls.push(`api ${req.path}`)
    ;(req.locals.trace as string[]).push('api')
  })
  app.use('/api/', (req) => {
    ;(req.locals.trace as string[]).push('api again')
  })
  app.use('/admin', () => {
    throw new HttpError(403, 'admins only')
  })
  app.use('/sync', (req) => {
    const box = { ran: false }
    queueMicrotask(() => (box.ran = true))
    req.locals.box = box
  })
  app.use('/slow', async (req) => {
    await sleep(20)
    if (req.path === '/slow/refuse') throw new HttpError(403, 'too slow')
    req.locals.waited = true
  })
  app.use('/limited', () => text('slow down', { status: 429, headers: { 'retry-after': '7' } }))
  app.use('/odd', () => 42 as never)
})

describe('what hooks can do', () => {
  test('hooks run in registration order, scoped ones only under their prefix', async () => {
    calls.length = 0
    const res = await fetch(base.url('/api/items/7'))
    expect(await res.json()).toEqual({ id: '7', trace: ['global', 'api', 'api again'] })
    expect(calls).toEqual(['global /api/items/7', 'api /api/items/7'])
    calls.length = 0
    expect(await (await fetch(base.url('/api'))).text()).toBe('api root')
    expect(await (await fetch(base.url('/apix'))).text()).toBe('not under /api')
    expect(await (await fetch(base.url('/other'))).text()).toBe('other')
    expect(calls).toEqual(['global /api', 'api /api', 'global /apix', 'global /other'])
  })

  test('a scope on a route with a parameter is decided per request, on the decoded path', async () => {
    const refused = await fetch(base.url('/admin/list'))
    expect([refused.status, await refused.json()]).toEqual([403, { error: 'admins only', status: 403 }])
    const encoded = await fetch(base.url('/%61dmin/list'))
    expect(encoded.status).toBe(403)
    expect(await (await fetch(base.url('/public/list'))).text()).toBe('list of public')
    expect(await (await fetch(base.url('/administrators/list'))).text()).toBe('list of administrators')
  })

  test('synchronous hooks run in the same turn as the handler', async () => {
    expect(await (await fetch(base.url('/sync'))).json()).toEqual({ microtaskRan: false })
  })

  test('an async hook lets through or refuses; stream routes wait for it too', async () => {
    expect(await (await fetch(base.url('/slow/pass'))).json()).toEqual({ waited: true })
    const refused = await fetch(base.url('/slow/refuse'))
    expect([refused.status, await refused.json()]).toEqual([403, { error: 'too slow', status: 403 }])
    const res = await fetch(base.url('/slow/events'))
    expect(res.headers.get('content-type')).toBe('text/event-stream')
    expect(await res.text()).toBe('data: true\n\n')
  })

  test('a hook that returns a Reply answers with it', async () => {
    const res = await fetch(base.url('/limited'))
    expect(res.status).toBe(429)
    expect(res.headers.get('retry-after')).toBe('7')
    expect(await res.text()).toBe('slow down')
  })

  test('a hook that returns something else than nothing or a Reply is a 500', async () => {
    const res = await fetch(base.url('/odd'))
    expect(res.status).toBe(500)
    expect(((await res.json()) as { error: string }).error).toMatch(/a hook returns nothing \(go on\) or a Reply/)
  })

  test('req.locals is assignable', () => {
    const req = { locals: {} } as RatRequest
    req.locals = { user: 'x' }
    expect(req.locals.user).toBe('x')
  })
})

describe('hooks that fail', () => {
  test('a hook that throws an Error: 500 through onError, counted as a handler error', async () => {
    const seen: Array<{ message: string; path: string }> = []
    const { app, url } = await startApp(
      (a) => {
        a.use('/boom', () => {
          throw new Error('hook boom')
        })
        a.use('/boom-async', async () => {
          await sleep(5)
          throw new Error('async hook boom')
        })
        a.get('/boom', () => 'never')
        a.sse('/boom/events', async function* () {
          yield 'never'
        })
        a.get('/boom-async', () => 'never')
        a.get('/ok', () => 'ok')
      },
      { onError: (err, req) => seen.push({ message: (err as Error).message, path: req.path }) },
    )
    for (const [path, message] of [
      ['/boom', 'hook boom'],
      ['/boom/events', 'hook boom'],
      ['/boom-async', 'async hook boom'],
    ]) {
      const before = app.metrics().handlerErrors
      const res = await fetch(url(path))
      expect(res.status).toBe(500)
      expect(res.headers.get('content-type')).toBe('application/json')
      expect(await res.json()).toEqual({ error: message, status: 500 })
      expect(seen.at(-1)).toEqual({ message, path })
      expect(app.metrics().handlerErrors).toBe(before + 1)
    }
    expect(await (await fetch(url('/ok'))).text()).toBe('ok')
  })

  test('a client that leaves during an async hook: the handler never runs', async () => {
    let ran = 0
    let hookDone = false
    const { port } = await startApp((a) => {
      a.use(async () => {
        await sleep(150)
        hookDone = true
      })
      a.get('/slow', () => {
        ran++
        return 'late'
      })
      a.sse('/slow-events', () => {
        ran++
      })
    })
    for (const path of ['/slow', '/slow-events']) {
      hookDone = false
      const client = new RawSseClient(port, path)
      await sleep(30)
      client.destroy()
      await waitFor('the hook to finish', () => hookDone)
      await sleep(30)
    }
    expect(ran).toBe(0)
  })
})

describe('channel routes and hooks', () => {
  test('a channel route no hook applies to is served without JS', async () => {
    let hookCalls = 0
    let news!: Channel
    const { port, url } = await startApp((a) => {
      news = a.channel('news', { history: 10 })
      a.use('/api', () => {
        hookCalls++
      })
      a.sse('/news', news)
      a.get('/api/x', () => 'x')
    })
    const clients = [new RawSseClient(port, '/news'), new RawSseClient(port, '/news')]
    for (const c of clients) expect((await c.head).status).toBe(200)
    await waitFor('two subscribers', () => news.subscribers === 2)
    news.publish('hello')
    for (const c of clients) expect((await c.waitForEvents(1)).map((e) => e.data)).toEqual(['hello'])
    for (const c of clients) c.destroy()
    expect(hookCalls).toBe(0)
    // The same hook does run for the route it covers.
    await fetch(url('/api/x'))
    expect(hookCalls).toBe(1)
  })

  test('a hook added after a channel route still guards it', async () => {
    let live!: Channel
    const { url } = await startApp((a) => {
      live = a.channel('live')
      a.sse('/live', live)
      a.use(auth)
    })
    const res = await fetch(url('/live'))
    expect([res.status, await res.json()]).toEqual([401, { error: 'log in first', status: 401 }])
    expect(live.subscribers).toBe(0)
    const ok = await fetch(url('/live'), { headers: AUTH })
    expect(ok.headers.get('content-type')).toBe('text/event-stream')
    await waitFor('the subscriber', () => live.subscribers === 1)
    await ok.body?.cancel()
  })

  test('a bad channel route pattern is reported by listen()', async () => {
    const app = createApp({ heartbeatMs: 0 })
    app.sse('/feed/<bogus:x>', app.channel('c'))
    const err = await app.listen({ port: 0 }).then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(RatError)
    expect((err as RatError).code).toBe('ERR_ROUTE')
    expect((err as RatError).message).toMatch(/unknown parameter type "bogus"/)
    await app.close(0)
  })
})

describe('app.use arguments', () => {
  test('a prefix must be a literal path, a hook a function, and hooks come before listen()', async () => {
    const app = createApp()
    expect(() => app.use('api', () => {})).toThrow(/must be a path starting with '\/'/)
    expect(() => app.use('/api/:id', () => {})).toThrow(/is a parameter/)
    expect(() => app.use('/api', 'nope' as never)).toThrow(RatError)
    const { app: listening } = await startApp(() => {})
    expect(() => listening.use(() => {})).toThrow(/hooks must be added before listen\(\)/)
  })
})

describe('app.onError', () => {
  test('its Reply replaces the default error response, HttpError included', async () => {
    const shaped: Array<{ status: number; message: string; path: string }> = []
    const logged: unknown[] = []
    const { app, url } = await startApp(
      (a) => {
        a.use('/guarded', auth)
        a.get('/guarded', () => 'in')
        a.sse('/guarded/events', async function* () {
          yield 'never'
        })
        a.get('/throws', () => {
          throw new Error('secret detail')
        })
        a.get('/conflict', () => {
          throw new HttpError(409, 'taken')
        })
        a.onError((err, req, res) => {
          shaped.push({ ...res, path: req.path })
          if (req.path === '/conflict') return undefined
          const code = err instanceof HttpError ? err.code : 'internal'
          return json({ code, detail: res.message }, { status: res.status, headers: { 'content-type': 'application/problem+json' } })
        })
      },
      { exposeErrors: false, onError: (err) => logged.push(err) },
    )
    const errorsBefore = app.metrics().handlerErrors
    const refused = await fetch(url('/guarded'))
    expect(refused.status).toBe(401)
    expect(refused.headers.get('content-type')).toBe('application/problem+json')
    expect(await refused.json()).toEqual({ code: 'ERR_HTTP_401', detail: 'log in first' })
    const sse = await fetch(url('/guarded/events'))
    expect([sse.status, sse.headers.get('content-type')]).toEqual([401, 'application/problem+json'])
    await sse.body?.cancel()
    // A refusal is not a handler error, shaped or not.
    expect(app.metrics().handlerErrors).toBe(errorsBefore)

    const before = app.metrics().handlerErrors
    const failed = await fetch(url('/throws'))
    expect(failed.status).toBe(500)
    expect(await failed.json()).toEqual({ code: 'internal', detail: 'Internal Server Error' })
    expect(app.metrics().handlerErrors).toBe(before + 1)
    // The onError option still logs errors that are not HttpError.
    expect(logged).toHaveLength(1)
    expect((logged[0] as Error).message).toBe('secret detail')

    // Nothing returned: the default response.
    const conflict = await fetch(url('/conflict'))
    expect([conflict.status, await conflict.json()]).toEqual([409, { error: 'taken', status: 409 }])
    expect(shaped).toEqual([
      { status: 401, message: 'log in first', path: '/guarded' },
      { status: 401, message: 'log in first', path: '/guarded/events' },
      { status: 500, message: 'Internal Server Error', path: '/throws' },
      { status: 409, message: 'taken', path: '/conflict' },
    ])
  })

  test('one that throws, returns a promise or an unsendable Reply keeps the default, and the server serves on', async () => {
    const logged: string[] = []
    const { url } = await startApp(
      (a) => {
        a.get('/throws', () => {
          throw new Error('handler boom')
        })
        a.get('/async-shaper', () => {
          throw new HttpError(418, 'teapot')
        })
        a.get('/bad-shape', () => {
          throw new HttpError(400, 'bad input')
        })
        a.get('/ok', () => 'ok')
        a.onError((_err, req) => {
          if (req.path === '/async-shaper') return Promise.reject(new Error('late')) as never
          if (req.path === '/bad-shape') return text('x', { status: 400, headers: { 'x-bad': 'line\nbreak' } })
          throw new Error('shaper boom')
        })
      },
      { onError: (err) => logged.push((err as Error).message) },
    )
    const res = await fetch(url('/throws'))
    expect([res.status, await res.json()]).toEqual([500, { error: 'handler boom', status: 500 }])
    expect(logged).toEqual(['handler boom', 'shaper boom'])
    const tea = await fetch(url('/async-shaper'))
    expect([tea.status, await tea.json()]).toEqual([418, { error: 'teapot', status: 418 }])
    expect(logged.at(-1)).toMatch(/app\.onError returned a promise/)
    const bad = await fetch(url('/bad-shape'))
    expect([bad.status, await bad.json()]).toEqual([400, { error: 'bad input', status: 400 }])
    expect(logged.at(-1)).toMatch(/x-bad/)
    await sleep(20)
    expect(await (await fetch(url('/ok'))).text()).toBe('ok')
  })

  test('once a stream has started it is not consulted: the stream ends with an error event', async () => {
    let consulted = 0
    const { url } = await startApp((a) => {
      a.sse('/late', async function* () {
        yield 'one'
        throw new Error('late boom')
      })
      a.onError(() => {
        consulted++
        return text('never sent', { status: 503 })
      })
    })
    const res = await fetch(url('/late'))
    expect(res.status).toBe(200)
    expect(parseSse(await res.text()).map((e) => [e.event, e.data])).toEqual([
      ['message', 'one'],
      ['error', JSON.stringify({ error: 'late boom' })],
    ])
    expect(consulted).toBe(0)
  })
})
