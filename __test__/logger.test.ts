// createApp({ logger }): one access log entry per request once its response is over
// (streams when they end, engine-made answers and channel routes included), handler
// errors to logger.error, and accessLog: false turns the entries off.
import { fetch } from 'undici'
import { expect, test } from 'vitest'
import type { AccessLogEntry } from '../ts/index.js'
import { startApp } from './support/app.js'
import { RawSseClient } from './support/sse.js'
import { waitFor } from './support/wait.js'

function memoryLogger() {
  const info: Array<[object, string | undefined]> = []
  const error: Array<[object, string | undefined]> = []
  return {
    info,
    error,
    logger: {
      info: (o: object, m?: string) => void info.push([o, m]),
      warn: () => {},
      error: (o: object, m?: string) => void error.push([o, m]),
    },
  }
}

test('every request is logged once its response is over, with status, ms and bytes', async () => {
  const log = memoryLogger()
  const { app, port, url } = await startApp(
    (a) => {
      a.get('/hello', () => 'hello')
      a.get('/boom', () => {
        throw new Error('kaput')
      })
      a.sse('/count', async function* () {
        for (let i = 0; i < 3; i++) yield `n${i}`
      })
      a.sse('/news', a.channel('news'))
    },
    { logger: log.logger, onError: undefined },
  )
  await (await fetch(url('/hello'), { headers: { 'user-agent': 'probe/1' } })).text()
  await (await fetch(url('/nowhere'))).text()
  await (await fetch(url('/boom'))).text()
  await (await fetch(url('/count'))).text()
  const news = new RawSseClient(port, '/news')
  await news.head
  news.destroy()
  await waitFor('five entries', () => log.info.length === 5)
  const entries = log.info.map(([o, m]) => {
    expect(m).toBe('request')
    return o as AccessLogEntry
  })
  const byPath = Object.fromEntries(entries.map((e) => [e.path, e]))
  expect(byPath['/hello']).toMatchObject({ method: 'GET', status: 200, bytes: 5, remoteAddress: '127.0.0.1', userAgent: 'probe/1' })
  expect(byPath['/nowhere']).toMatchObject({ status: 404 })
  expect(byPath['/boom']).toMatchObject({ status: 500 })
  expect(byPath['/count']).toMatchObject({ status: 200, bytes: 3 * 'data: n0\n\n'.length })
  expect(byPath['/news']).toMatchObject({ status: 200 })
  for (const e of entries) expect(e.ms).toBeGreaterThanOrEqual(0)
  // The handler's error went to logger.error.
  expect(log.error).toHaveLength(1)
  expect(log.error[0][1]).toBe('handler failed')
  expect(log.error[0][0]).toMatchObject({ method: 'GET', path: '/boom' })
  expect(app.metrics().handlerErrors).toBe(1)
})

test('accessLog: false keeps the logger for errors only', async () => {
  const log = memoryLogger()
  const { url } = await startApp((a) => a.get('/x', () => 'x'), { logger: log.logger, accessLog: false, onError: undefined })
  await (await fetch(url('/x'))).text()
  await new Promise((r) => setTimeout(r, 100))
  expect(log.info).toHaveLength(0)
})

test('engine warnings reach logger.warn: a handler that does not answer in time', async () => {
  const warn: Array<[Record<string, unknown>, string | undefined]> = []
  const { url } = await startApp(
    (a) => {
      a.get('/stuck', () => new Promise(() => {}))
    },
    {
      logger: { info: () => {}, warn: (o: object, m?: string) => void warn.push([o as Record<string, unknown>, m]), error: () => {} },
      limits: { handlerTimeoutMs: 200 },
    },
  )
  const res = await fetch(url('/stuck'))
  expect(res.status).toBe(504)
  await res.text()
  await waitFor('a warning', () => warn.length === 1)
  expect(warn[0][0]).toMatchObject({ kind: 'handler_timeout', path: '/stuck', remoteAddress: '127.0.0.1' })
  expect(warn[0][1]).toMatch(/did not answer within 200 ms/)
})
