// Failures: handlers that throw or reject (500 before the head, `event: error` after it),
// results and stream items JSON cannot encode, HttpError statuses, and RatError for misuse
// (routes, listen, SSE fields).
import net from 'node:net'
import { EventSource } from 'eventsource'
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { createApp, HttpError, RatError, reply, sseEvent, type App } from '../ts/index.js'
import { startApp } from './support/app.js'
import { runFixture } from './support/child.js'
import { parseSse } from './support/sse.js'
import { sleep, within } from './support/wait.js'

const hookErrors: Array<{ message: string; path: string }> = []
/** The values onError received, in order. */
const hookValues: unknown[] = []
const fieldErrors: unknown[] = []

function circular(): unknown {
  const o: Record<string, unknown> = { a: 1 }
  o.self = o
  return o
}

/** Handler results JSON cannot encode: JSON.stringify throws, or gives no text at all. */
const UNSENDABLE: Array<[name: string, make: () => unknown, message: RegExp]> = [
  ['bigint', () => ({ n: 10n }), /BigInt/],
  ['circular', circular, /circular/i],
  ['symbol', () => Symbol('s'), /JSON-serializable, not symbol/],
  ['function', () => () => 1, /JSON-serializable, not function/],
]

/** `/unsendable/sync/<name>` returns the value, `/unsendable/async/<name>` resolves to it. */
function addUnsendable(app: App): void {
  for (const [name, make] of UNSENDABLE) {
    app.get(`/unsendable/sync/${name}`, () => make())
    app.get(`/unsendable/async/${name}`, async () => {
      await sleep(5)
      return make()
    })
  }
}
const UNSENDABLE_CASES = UNSENDABLE.flatMap(([name, , message]) =>
  (['sync', 'async'] as const).map((mode) => [`/unsendable/${mode}/${name}`, message] as const),
)

const { url, app } = await startApp(
  (app) => {
    app.get('/ok', () => 'ok')
    app.get('/throws', () => {
      throw new Error('sync boom')
    })
    app.get('/rejects', async () => {
      await new Promise((r) => setTimeout(r, 5))
      throw new Error('async boom')
    })
    app.get('/throws-string', () => {
      throw 'not an Error'
    })
    app.get('/http-error', () => {
      throw new HttpError(403, 'not yours', { headers: { 'www-authenticate': 'Bearer' } })
    })
    app.get('/http-error-async', async () => {
      throw new HttpError(409, 'conflict')
    })
    app.get('/returns-generator', () => (function* () {})())
    app.get('/bad-header', () => reply('x', { headers: { 'x-bad': 'line\nbreak' } }))
    app.sse('/sse-throws-late', (_req, stream) => {
      stream.send('one')
      stream.send('two')
      throw new Error('late sse boom')
    })
    app.sse('/sse-generator-throws', async function* () {
      yield 'before'
      throw new Error('generator boom')
    })
    app.sse('/sse-throws-early', () => {
      throw new Error('early sse boom')
    })
    app.sse('/sse-http-error', () => {
      throw new HttpError(401, 'log in first')
    })
    app.sse('/sse-bad-fields', (_req, stream) => {
      for (const fields of [{ id: 'a\nb' }, { id: 'a\rb' }, { id: 'a\0b' }, { event: 'a\nb' }]) {
        try {
          stream.send('x', fields)
        } catch (err) {
          fieldErrors.push(err)
        }
      }
      stream.send('still open')
      stream.end()
    })
    app.sse('/sse-yields-bad-id', async function* () {
      yield 'fine'
      yield sseEvent('never', { id: 'bad\nid' })
    })
    app.chunked('/chunked-throws-late', async function* () {
      yield 'partial '
      await new Promise((r) => setTimeout(r, 10))
      throw new Error('chunked boom')
    })
    addUnsendable(app)
    app.ndjson('/ndjson-yields-bigint', async function* () {
      yield { ok: 1 }
      await sleep(10)
      yield { n: 10n }
    })
    app.ndjson('/ndjson-yields-function', async function* () {
      yield { ok: 1 }
      await sleep(10)
      yield () => 1
    })
    app.sse('/sse-yields-bigint', async function* () {
      yield 'before'
      yield { n: 10n }
    })
    app.sse('/sse-yields-symbol', async function* () {
      yield 'before'
      yield Symbol('s')
    })
    app.sse('/sse-sends-bigint', async (_req, stream) => {
      stream.send('before')
      await sleep(10)
      stream.send({ n: 10n }, {})
    })
  },
  {
    onError: (err, req) => {
      hookValues.push(err)
      hookErrors.push({ message: err instanceof Error ? err.message : String(err), path: req.path })
    },
  },
)

async function expectServing() {
  const res = await fetch(url('/ok'))
  expect(await res.text()).toBe('ok')
}

describe('handler failures before the response starts', () => {
  test.each([
    ['/throws', 'sync boom'],
    ['/rejects', 'async boom'],
    ['/throws-string', 'not an Error'],
    ['/sse-throws-early', 'early sse boom'],
  ])('%s → 500 {error, status} and the server keeps serving', async (path, message) => {
    const before = app.metrics().handlerErrors
    const res = await fetch(url(path))
    expect(res.status).toBe(500)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.json()).toEqual({ error: message, status: 500 })
    expect(app.metrics().handlerErrors).toBe(before + 1)
    expect(hookErrors.at(-1)).toEqual({ message, path })
    await expectServing()
  })

  test('HttpError answers with its status, message and headers, and is not reported', async () => {
    const reported = hookErrors.length
    const res = await fetch(url('/http-error'))
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
    expect(await res.json()).toEqual({ error: 'not yours', status: 403 })
    const res2 = await fetch(url('/http-error-async'))
    expect([res2.status, await res2.json()]).toEqual([409, { error: 'conflict', status: 409 }])
    const res3 = await fetch(url('/sse-http-error'))
    expect([res3.status, await res3.json()]).toEqual([401, { error: 'log in first', status: 401 }])
    expect(hookErrors.length).toBe(reported)
  })

  test('HttpError outside 400..599 is a RatError', () => {
    expect(() => new HttpError(200, 'fine')).toThrow(RatError)
    expect(() => new HttpError(200, 'fine')).toThrow(/400\.\.599/)
  })

  test('a plain route returning a generator is a 500 that names the stream routes', async () => {
    const res = await fetch(url('/returns-generator'))
    expect(res.status).toBe(500)
    expect(((await res.json()) as { error: string }).error).toMatch(/app\.chunked\(\)/)
  })

  test('an invalid header value in a reply is a 500 saying which header', async () => {
    const res = await fetch(url('/bad-header'))
    expect(res.status).toBe(500)
    expect(((await res.json()) as { error: string }).error).toContain('x-bad')
    await expectServing()
  })

  test('with exposeErrors: false the client sees a generic message', async () => {
    const quiet = await startApp(
      (a) =>
        a.get('/secret', () => {
          throw new Error('database password is hunter2')
        }),
      { exposeErrors: false },
    )
    const res = await fetch(quiet.url('/secret'))
    expect(res.status).toBe(500)
    expect(await res.json()).toEqual({ error: 'Internal Server Error', status: 500 })
  })

  test('an onError hook that throws does not take the server down', async () => {
    const s = await startApp(
      (a) => {
        a.get('/x', () => {
          throw new Error('x')
        })
        a.get('/ok', () => 'ok')
      },
      {
        onError: () => {
          throw new Error('hook failed')
        },
      },
    )
    expect((await fetch(s.url('/x'))).status).toBe(500)
    expect(await (await fetch(s.url('/ok'))).text()).toBe('ok')
  })

  test('a rejection with a value String() cannot convert still gets a 500', async () => {
    const seen: unknown[] = []
    const s = await startApp(
      (a) => {
        a.get('/odd', async () => {
          await sleep(5)
          throw Object.create(null)
        })
        a.get('/ok', () => 'ok')
      },
      { onError: (err) => seen.push(err) },
    )
    const res = await within(3000, 'the answer to /odd', fetch(s.url('/odd')))
    expect([res.status, await res.json()]).toEqual([500, { error: 'Internal Server Error', status: 500 }])
    expect(seen).toHaveLength(1)
    expect(await (await fetch(s.url('/ok'))).text()).toBe('ok')
  })
})

describe('results JSON cannot encode', () => {
  test.each(UNSENDABLE_CASES)('%s → 500 through onError, and the server keeps serving', async (path, message) => {
    const reported = hookValues.length
    const res = await within(3000, `the answer to ${path}`, fetch(url(path)))
    expect(res.status).toBe(500)
    expect(res.headers.get('content-type')).toBe('application/json')
    const body = (await res.json()) as { error: string; status: number }
    expect(body.status).toBe(500)
    expect(body.error).toMatch(message)
    expect(hookValues.length).toBe(reported + 1)
    expect(hookValues.at(-1)).toBeInstanceOf(TypeError)
    expect((hookValues.at(-1) as TypeError).message).toBe(body.error)
    await expectServing()
  })

  test('with exposeErrors: false the client sees a generic message and onError the error', async () => {
    const seen: unknown[] = []
    const quiet = await startApp(
      (a) => {
        addUnsendable(a)
        a.get('/ok', () => 'ok')
      },
      { exposeErrors: false, onError: (err) => seen.push(err) },
    )
    for (const [path, message] of UNSENDABLE_CASES) {
      const res = await within(3000, `the answer to ${path}`, fetch(quiet.url(path)))
      expect([path, res.status, await res.json()]).toEqual([path, 500, { error: 'Internal Server Error', status: 500 }])
      expect(seen).toHaveLength(1)
      expect(seen[0]).toBeInstanceOf(TypeError)
      expect((seen[0] as TypeError).message).toMatch(message)
      seen.length = 0
    }
    expect(await (await fetch(quiet.url('/ok'))).text()).toBe('ok')
  })

  test('an async result JSON cannot encode leaves a process of its own up', async () => {
    // Node ends a process on an unhandled rejection; this one has no handler for them.
    const child = runFixture('unsendable.mts')
    await child.printed('listening')
    const base = `http://127.0.0.1:${/listening (\d+)/.exec(child.stdout())![1]}`
    const res = await within(3000, 'the answer to /bigint', fetch(`${base}/bigint`))
    expect([res.status, await res.json()]).toEqual([500, { error: 'Internal Server Error', status: 500 }])
    await sleep(200)
    expect(child.proc.exitCode).toBeNull()
    expect(await (await fetch(`${base}/ok`)).text()).toBe('ok')
    expect(child.stdout()).toContain('onError TypeError')
  }, 25_000)

  test.each([
    ['/ndjson-yields-bigint', /BigInt/],
    ['/ndjson-yields-function', /JSON-serializable, not function/],
  ])('an NDJSON item JSON cannot encode (%s) cuts the stream', async (path, message) => {
    const reported = hookValues.length
    const res = await fetch(url(path))
    expect(res.status).toBe(200)
    await expect(within(3000, 'body error', res.text())).rejects.toThrow()
    expect(hookValues.length).toBe(reported + 1)
    expect(hookValues.at(-1)).toBeInstanceOf(TypeError)
    expect((hookValues.at(-1) as TypeError).message).toMatch(message)
    await expectServing()
  })

  test.each([
    ['/sse-yields-bigint', /BigInt/],
    ['/sse-yields-symbol', /JSON-serializable, not symbol/],
    ['/sse-sends-bigint', /BigInt/],
  ])('an SSE event JSON cannot encode (%s) ends the stream with an error event', async (path, message) => {
    const res = await fetch(url(path))
    expect(res.status).toBe(200)
    const events = parseSse(await within(3000, 'clean end of the stream', res.text()))
    expect(events.map((e) => [e.event, e.data])).toEqual([
      ['message', 'before'],
      ['error', expect.stringMatching(message)],
    ])
    expect(hookValues.at(-1)).toBeInstanceOf(TypeError)
    await expectServing()
  })
})

describe('failures after a stream started', () => {
  test('an SSE handler that throws after sending events ends with an error event', async () => {
    const res = await fetch(url('/sse-throws-late'))
    expect(res.status).toBe(200)
    const events = parseSse(await within(3000, 'clean end of the stream', res.text()))
    expect(events.map((e) => [e.event, e.data])).toEqual([
      ['message', 'one'],
      ['message', 'two'],
      ['error', JSON.stringify({ error: 'late sse boom' })],
    ])
    await expectServing()
  })

  test('a generator that throws after yielding ends with an error event', async () => {
    const res = await fetch(url('/sse-generator-throws'))
    const events = parseSse(await within(3000, 'clean end of the stream', res.text()))
    expect(events.map((e) => e.event)).toEqual(['message', 'error'])
    expect(JSON.parse(events[1].data)).toEqual({ error: 'generator boom' })
  })

  test('EventSource receives the error event as a message event named error', async () => {
    const es = new EventSource(url('/sse-throws-late'))
    try {
      const data = await within(
        5000,
        'named error event',
        new Promise<string>((resolve) =>
          es.addEventListener('error', (e) => {
            if ('data' in e && typeof e.data === 'string') resolve(e.data)
          }),
        ),
      )
      expect(JSON.parse(data)).toEqual({ error: 'late sse boom' })
    } finally {
      es.close()
    }
  })

  test('a chunked stream that fails after starting is cut, so the client sees it incomplete', async () => {
    const res = await fetch(url('/chunked-throws-late'))
    expect(res.status).toBe(200)
    await expect(within(3000, 'body error', res.text())).rejects.toThrow()
    await expectServing()
  })
})

describe('RatError for misuse', () => {
  const fresh = (): App => createApp({ heartbeatMs: 0 })

  function caught(fn: () => unknown): RatError {
    try {
      fn()
    } catch (err) {
      expect(err).toBeInstanceOf(RatError)
      return err as RatError
    }
    throw new Error('expected a RatError')
  }

  test('a duplicate route', () => {
    const a = fresh().get('/users/:id', () => 1)
    const err = caught(() => a.get('/users/:id', () => 2))
    expect(err.code).toBe('ERR_ROUTE')
    expect(err.message).toMatch(/duplicate route: GET \/users\/:id/)
    // The same shape under another name is the same route.
    expect(caught(() => a.get('/users/<other>', () => 3)).code).toBe('ERR_ROUTE')
    // Another method, or another parameter type, is not a duplicate.
    a.post('/users/:id', () => 4)
    a.get('/users/<int:id>', () => 5)
  })

  test.each([
    ['no-leading-slash', /must start with '\/'/],
    ['/a/<bogus:x>', /unknown parameter type "bogus"; use int, float, uuid, str or path/],
    ['/a/<path:rest>/more', /tail parameter must be the last segment/],
    ['/a/:id/:id', /appears twice/],
    ['/a/x:y', /a parameter must be a whole path segment/],
    ['/a/:', /must be a word/],
  ])('a bad pattern %s', (pattern, why) => {
    const err = caught(() => fresh().get(pattern, () => 1))
    expect(err.code).toBe('ERR_ROUTE')
    expect(err.message).toMatch(why)
    expect(err.message).toContain('valid forms: /users/:id')
  })

  test('an invalid method', () => {
    const err = caught(() => fresh().route('FETCH', '/x', () => 1))
    expect(err.code).toBe('ERR_ROUTE')
    expect(err.message).toMatch(/^invalid method "FETCH": use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS/)
    // Thrown by the binding with its code set; RatError wraps it.
    expect(err.cause).toBeInstanceOf(Error)
    expect((err.cause as { code?: string }).code).toBe('ERR_ROUTE')
  })

  test('adding a route after listen', async () => {
    const err = caught(() => app.get('/late', () => 1))
    expect(err.code).toBe('ERR_INVALID_ARGUMENT')
    expect(err.message).toMatch(/before listen\(\)/)
  })

  test('listen on a busy port rejects with ERR_IO', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    const busy = (blocker.address() as net.AddressInfo).port
    try {
      const a = fresh()
      a.get('/', () => 1)
      const err = await a.listen({ port: busy }).then(
        () => null,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(RatError)
      expect((err as RatError).code).toBe('ERR_IO')
      expect((err as RatError).message).toBe(`cannot listen on 127.0.0.1:${busy}: the port is already in use`)
      // The binding sets the code on the error it rejects with; the message is the reason alone.
      const cause = (err as RatError).cause as Error & { code?: string }
      expect(cause).toBeInstanceOf(Error)
      expect(cause.code).toBe('ERR_IO')
      expect(cause.message).toBe((err as RatError).message)
      await a.close(0)
    } finally {
      blocker.close()
    }
  })

  test('listen on an invalid port rejects with ERR_INVALID_ARGUMENT', async () => {
    const a = fresh()
    const err = (await a.listen({ port: 70000 }).catch((e: unknown) => e)) as RatError
    expect(err).toBeInstanceOf(RatError)
    expect(err.code).toBe('ERR_INVALID_ARGUMENT')
    expect(err.message).toMatch(/0\.\.=65535/)
    await a.close(0)
  })

  test('an SSE id or event name with CR/LF/NUL throws ERR_INVALID_FIELD and the stream goes on', async () => {
    fieldErrors.length = 0
    const res = await fetch(url('/sse-bad-fields'))
    expect(parseSse(await res.text()).map((e) => e.data)).toEqual(['still open'])
    expect(fieldErrors).toHaveLength(4)
    for (const err of fieldErrors) {
      expect(err).toBeInstanceOf(RatError)
      expect((err as RatError).code).toBe('ERR_INVALID_FIELD')
    }
    expect((fieldErrors[0] as RatError).message).toMatch(/id/)
    expect((fieldErrors[3] as RatError).message).toMatch(/event/)
  })

  test('a generator yielding an invalid id ends the stream with an error event', async () => {
    const res = await fetch(url('/sse-yields-bad-id'))
    const events = parseSse(await res.text())
    expect(events.map((e) => e.event)).toEqual(['message', 'error'])
    expect(events[1].data).toMatch(/id/)
  })

  test('a channel publish of a value JSON cannot encode throws a TypeError', () => {
    const ch = fresh().channel('unsendable')
    expect(() => ch.publish({ n: 10n })).toThrow(TypeError)
    expect(() => ch.publish(() => 1)).toThrow(/JSON-serializable, not function/)
    expect(() => ch.publish(Symbol('s'), { event: 'e' })).toThrow(/JSON-serializable, not symbol/)
    expect(ch.metrics().published).toBe(0)
  })

  test('a channel publish with an invalid id throws ERR_INVALID_FIELD', () => {
    const ch = fresh().channel('bad-ids')
    const err = caught(() => ch.publish('d', { id: 'x\ny' }))
    expect(err.code).toBe('ERR_INVALID_FIELD')
  })
})
