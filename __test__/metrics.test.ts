// app.metricsText(): the Prometheus text format 0.0.4, read back with a Prometheus text
// parser (parse-prometheus-text-format) and checked against the grammar line by line; its
// values are app.metrics()'s and every registered channel's.
import parsePrometheusTextFormat, { type PrometheusFamily } from 'parse-prometheus-text-format'
import { fetch } from 'undici'
import { expect, test } from 'vitest'
import { createApp, reply, type Channel } from '../ts/index.js'
import { startApp } from './support/app.js'
import { RawSseClient } from './support/sse.js'
import { plateau, waitFor } from './support/wait.js'

/** Names of the engine's families and the `app.metrics()` field each one reports. */
const ENGINE = {
  rat_connections_active: ['gauge', 'activeConnections'],
  rat_connections_total: ['counter', 'totalConnections'],
  rat_requests_total: ['counter', 'totalRequests'],
  rat_streams_active: ['gauge', 'activeStreams'],
  rat_streams_total: ['counter', 'totalStreams'],
  rat_events_sent_total: ['counter', 'eventsSent'],
  rat_sent_bytes_total: ['counter', 'bytesSent'],
  rat_rejected_requests_total: ['counter', 'rejectedRequests'],
  rat_handler_errors_total: ['counter', 'handlerErrors'],
  rat_dispatches_total: ['counter', 'dispatchCount'],
} as const
/** `rat_refusals_total{reason}` and the `app.metrics()` field of each reason. */
const REFUSALS = {
  connection_limit: 'refusedConnections',
  stream_limit: 'refusedStreams',
  header_timeout: 'headerTimeouts',
  body_timeout: 'bodyTimeouts',
  handler_timeout: 'handlerTimeouts',
  unauthorized: 'unauthorized',
} as const
const CHANNEL = {
  rat_channel_subscribers: ['gauge', 'subscribers'],
  rat_channel_published_total: ['counter', 'published'],
  rat_channel_delivered_total: ['counter', 'delivered'],
  rat_channel_dropped_total: ['counter', 'dropped'],
  rat_channel_replayed_total: ['counter', 'replayed'],
  rat_channel_closed_slow_total: ['counter', 'closedSlow'],
} as const
/** Every engine family, in the order metricsText() writes them (channels follow). */
const ENGINE_FAMILIES = [
  ...Object.keys(ENGINE),
  'rat_dispatch_lag_seconds_total',
  'rat_dispatch_lag_max_seconds',
  'rat_responses_total',
  'rat_refusals_total',
]

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (\S+)$/

/**
 * What the parser does not check: every line is a HELP, a TYPE or a sample of the format's
 * grammar; each family has one HELP then one TYPE before its samples, and its samples
 * together; no two samples share a name and labels; values are numbers.
 */
function checkGrammar(text: string): void {
  expect(text.endsWith('\n')).toBe(true)
  const seen = new Set<string>()
  const families = new Set<string>()
  let family = ''
  let expecting: 'help' | 'type' | 'sample' = 'help'
  for (const line of text.slice(0, -1).split('\n')) {
    const help = /^# HELP (\S+) (.*)$/.exec(line)
    const type = /^# TYPE (\S+) (counter|gauge)$/.exec(line)
    if (help) {
      expect(METRIC_NAME.test(help[1]), line).toBe(true)
      expect(families.has(help[1]), `${help[1]} described twice`).toBe(false)
      expect(help[2]).not.toMatch(/\\(?![\\n])/)
      families.add(help[1])
      family = help[1]
      expecting = 'type'
      continue
    }
    if (type) {
      expect([expecting, type[1]], line).toEqual(['type', family])
      if (type[2] === 'counter') expect(family.endsWith('_total'), line).toBe(true)
      expecting = 'sample'
      continue
    }
    const sample = SAMPLE.exec(line)
    expect(sample, `not a sample line: ${JSON.stringify(line)}`).not.toBeNull()
    expect([expecting, sample![1]], line).toEqual(['sample', family])
    expect(Number.isFinite(Number(sample![3])), line).toBe(true)
    const key = sample![1] + (sample![2] ?? '')
    expect(seen.has(key), `${key} twice`).toBe(false)
    seen.add(key)
  }
}

function parse(text: string): Map<string, PrometheusFamily> {
  checkGrammar(text)
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]))
}

const weird = 'odd "name" with \\ and\nnewline'
let news!: Channel
let odd!: Channel
const { app, port, url } = await startApp((app) => {
  news = app.channel('news', { history: 100 })
  odd = app.channel(weird)
  app.channel('idle')
  app.sse('/news', news)
  app.get('/hello', () => 'hello')
  app.get('/boom', () => {
    throw new Error('boom')
  })
  app.get('/metrics', () => reply(app.metricsText(), { headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' } }))
})

test('every counter of app.metrics() and of each channel, with HELP and TYPE', async () => {
  const first = news.publish('one')
  news.publish('two')
  // One live subscriber, one resuming after 'one' (so 'two' is replayed).
  const clients = [new RawSseClient(port, '/news'), new RawSseClient(port, '/news', { headers: { 'last-event-id': first } })]
  await waitFor('two subscribers', () => news.subscribers === 2)
  news.publish('three')
  odd.publish('nobody listens')
  expect((await clients[0].waitForEvents(1)).map((e) => e.data)).toEqual(['three'])
  expect((await clients[1].waitForEvents(2)).map((e) => e.data)).toEqual(['two', 'three'])
  await fetch(url('/hello'))
  await fetch(url('/boom'))
  await fetch(url('/nowhere'))
  await plateau('deliveries', () => news.metrics().delivered, { quietMs: 100 })
  // Every counter still, so that metricsText() and metrics() read the same numbers.
  await plateau('bytes sent', () => app.metrics().bytesSent, { quietMs: 100 })

  const text = app.metricsText()
  const m = app.metrics()
  const families = parse(text)
  expect([...families.keys()]).toEqual([...ENGINE_FAMILIES, ...Object.keys(CHANNEL)])
  const lag = families.get('rat_dispatch_lag_seconds_total')!.metrics[0].value
  expect(Number(lag)).toBeCloseTo(m.dispatchLagMs / 1000, 6)
  expect(Number(lag)).toBeGreaterThan(0)
  expect(Number(families.get('rat_dispatch_lag_max_seconds')!.metrics[0].value)).toBeCloseTo(m.dispatchLagMaxMs / 1000, 6)
  expect(m.dispatchCount).toBeGreaterThan(0)
  const responses = families.get('rat_responses_total')!
  expect(responses.metrics).toEqual(['1xx', '2xx', '3xx', '4xx', '5xx'].map((c, i) => ({ value: String(m.responses[i]), labels: { class: c } })))
  // /hello and the two SSE heads (2xx), /nowhere (4xx), /boom (5xx).
  expect(m.responses[1]).toBeGreaterThanOrEqual(3)
  expect(m.responses[3]).toBeGreaterThanOrEqual(1)
  expect(m.responses[4]).toBeGreaterThanOrEqual(1)
  const refusals = families.get('rat_refusals_total')!
  expect(refusals.type).toBe('COUNTER')
  expect(refusals.metrics).toEqual(Object.entries(REFUSALS).map(([reason, field]) => ({ value: String(m[field]), labels: { reason } })))
  for (const [name, [type, field]] of Object.entries(ENGINE)) {
    const f = families.get(name)!
    expect(f.type).toBe(type.toUpperCase())
    expect(f.help.length).toBeGreaterThan(0)
    expect(f.metrics).toEqual([{ value: String(m[field]) }])
  }
  // The numbers are the live ones, not zeros.
  expect(m).toMatchObject({ activeStreams: 2, handlerErrors: 1, rejectedRequests: 1 })
  expect(m.totalRequests).toBeGreaterThanOrEqual(5)

  const byName = { news: news.metrics(), [weird]: odd.metrics(), idle: app.channel('idle').metrics() }
  expect(byName.news).toMatchObject({ subscribers: 2, published: 3, replayed: 1 })
  expect(byName.news.delivered).toBeGreaterThanOrEqual(2)
  for (const [name, [type, field]] of Object.entries(CHANNEL)) {
    const f = families.get(name)!
    expect(f.type).toBe(type.toUpperCase())
    expect(f.metrics).toEqual(Object.entries(byName).map(([channel, cm]) => ({ value: String(cm[field]), labels: { channel } })))
  }
  // The label value is escaped as the format says.
  expect(text).toContain('rat_channel_published_total{channel="odd \\"name\\" with \\\\ and\\nnewline"} 1\n')
  for (const c of clients) c.destroy()
})

test('served over HTTP it parses the same way; channels removed from the registry leave it', async () => {
  app.channel('short-lived').publish('x')
  let text = await (await fetch(url('/metrics'))).text()
  expect(parse(text).get('rat_channel_published_total')!.metrics.map((s) => s.labels?.channel)).toContain('short-lived')
  app.deleteChannel('short-lived')
  const res = await fetch(url('/metrics'))
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
  text = await res.text()
  const families = parse(text)
  expect(families.get('rat_channel_published_total')!.metrics.map((s) => s.labels?.channel)).toEqual(['news', weird, 'idle'])
  expect(Number(families.get('rat_requests_total')!.metrics[0].value)).toBeGreaterThan(0)
})

test('an app with no channel and not listening: the engine families, all zero', () => {
  const families = parse(createApp().metricsText())
  expect([...families.keys()]).toEqual(ENGINE_FAMILIES)
  for (const name of [...Object.keys(ENGINE), 'rat_dispatch_lag_seconds_total', 'rat_dispatch_lag_max_seconds']) {
    expect(families.get(name)!.metrics).toEqual([{ value: '0' }])
  }
  expect(families.get('rat_responses_total')!.metrics.map((s) => s.value)).toEqual(['0', '0', '0', '0', '0'])
  expect(families.get('rat_refusals_total')!.metrics.map((s) => s.value)).toEqual(['0', '0', '0', '0', '0', '0'])
})
