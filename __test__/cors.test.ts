// createApp({ cors }): preflights answered by the engine, CORS headers on plain responses
// and streams for allowed origins only, per-route overrides. (A browser's view of the same
// is in browser.test.ts.)
import { request } from 'undici'
import { expect, test } from 'vitest'
import { createApp, RatError } from '../ts/index.js'
import { startApp } from './support/app.js'

const headersOf = async (url: string, method: 'GET' | 'OPTIONS', headers: Record<string, string>) => {
  const res = await request(url, { method, headers })
  await res.body.text()
  return { status: res.statusCode, h: res.headers }
}

/** Lets a response go without reading it (the channel stream never ends). */
const discard = (res: Awaited<ReturnType<typeof request>>) => {
  res.body.on('error', () => {})
  res.body.destroy()
}

const { url } = await startApp(
  (a) => {
    a.get('/api/data', () => ({ ok: true }))
    a.post('/api/data', () => ({ posted: true }))
    a.sse('/events', async function* () {
      yield 'hi'
    })
    a.sse('/news', a.channel('news'))
    a.get('/private', () => 'no cors', { cors: false })
    a.get('/partner', () => 'partner', { cors: { origin: 'https://partner.example' } })
  },
  {
    cors: { origin: ['https://app.example', /^https:\/\/[a-z0-9-]+\.preview\.example$/i], credentials: true, exposedHeaders: ['x-total'], maxAge: 600 },
  },
)

test('a preflight is answered with 204 and the allowed methods and headers', async () => {
  const { status, h } = await headersOf(url('/api/data'), 'OPTIONS', {
    origin: 'https://app.example',
    'access-control-request-method': 'POST',
    'access-control-request-headers': 'content-type',
  })
  expect(status).toBe(204)
  expect(h['access-control-allow-origin']).toBe('https://app.example')
  expect(h['access-control-allow-credentials']).toBe('true')
  expect(h['access-control-allow-methods']).toBe('GET, HEAD, POST')
  expect(h['access-control-allow-headers']).toBe('content-type')
  expect(h['access-control-max-age']).toBe('600')
})

test('plain responses, SSE and channel streams carry the headers for allowed origins only', async () => {
  for (const path of ['/api/data', '/events', '/news']) {
    const ok = await request(url(path), { headers: { origin: 'https://PR-7.preview.example' } })
    expect(ok.headers['access-control-allow-origin'], path).toBe('https://PR-7.preview.example')
    expect(ok.headers['access-control-expose-headers']).toBe('x-total')
    expect(ok.headers.vary).toBe('origin')
    discard(ok)
    const no = await request(url(path), { headers: { origin: 'https://evil.example' } })
    expect(no.headers['access-control-allow-origin'], path).toBeUndefined()
    discard(no)
  }
})

test('a route can turn CORS off or use its own policy', async () => {
  expect((await headersOf(url('/private'), 'GET', { origin: 'https://app.example' })).h['access-control-allow-origin']).toBeUndefined()
  const partner = await headersOf(url('/partner'), 'GET', { origin: 'https://partner.example' })
  expect(partner.h['access-control-allow-origin']).toBe('https://partner.example')
  expect((await headersOf(url('/partner'), 'GET', { origin: 'https://app.example' })).h['access-control-allow-origin']).toBeUndefined()
})

test('an origin that is not a string, a RegExp or one function is an error', () => {
  expect(() => createApp({ cors: { origin: 42 as never } })).toThrow(RatError)
  expect(() => createApp({ cors: { origin: [() => true, () => false] } })).toThrow(RatError)
})

test('an origin function decides the other origins, once each, async or throwing', async () => {
  const asked: string[] = []
  const { url } = await startApp(
    (a) => {
      a.get('/data', () => 'data')
      a.post('/data', () => 'posted')
      a.sse('/feed', async function* () {
        yield 'x'
      })
    },
    {
      cors: {
        origin: [
          'https://app.example',
          async (origin) => {
            asked.push(origin)
            if (origin === 'https://broken.example') throw new Error('lookup failed')
            await new Promise((r) => setTimeout(r, 10))
            return origin.endsWith('.partner.example')
          },
        ],
      },
      onError: () => {},
      logger: { info: () => {}, warn: () => {}, error: () => {} },
    },
  )
  for (let round = 0; round < 2; round++) {
    for (const [origin, allowed] of [
      ['https://a.partner.example', true],
      ['https://evil.example', false],
      ['https://broken.example', false],
      ['https://app.example', true],
    ] as const) {
      for (const path of ['/data', '/feed']) {
        const res = await request(url(path), { headers: { origin } })
        expect(res.headers['access-control-allow-origin'], `${path} ${origin}`).toBe(allowed ? origin : undefined)
        await res.body.text()
      }
      const pre = await headersOf(url('/data'), 'OPTIONS', { origin, 'access-control-request-method': 'POST' })
      expect(pre.status).toBe(204)
      expect(pre.h['access-control-allow-origin'], `preflight ${origin}`).toBe(allowed ? origin : undefined)
    }
  }
  expect(asked).toEqual(['https://a.partner.example', 'https://evil.example', 'https://broken.example'])
})
