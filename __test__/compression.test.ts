// createApp({ compression }): the engine compresses as Accept-Encoding asks, and a
// compressed stream stays live: each event decodes with Node's zlib on arrival. (zstd is
// not in Node 20's zlib: the engine's tests and the browser test decode it.)
import http from 'node:http'
import zlib from 'node:zlib'
import { request } from 'undici'
import { expect, test } from 'vitest'
import { createApp, RatError, sseEvent } from '../ts/index.js'
import { startApp } from './support/app.js'

const rows = Array.from({ length: 200 }, (_, i) => ({ id: i, name: `row ${i}`, ok: true }))

const { app, url } = await startApp(
  (a) => {
    a.get('/rows', () => rows)
    a.get('/rows-plain', () => rows, { compression: false })
    a.get('/small', () => ({ ok: true }))
    a.sse('/ticks', async function* () {
      for (let i = 0; i < 4; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 300))
        yield sseEvent({ i, sentMs: Date.now(), pad: 'x'.repeat(200) }, { id: i })
      }
    })
    a.sse('/news', a.channel('news', { history: 10 }))
  },
  { compression: true },
)

test('plain responses are compressed as negotiated, small or opted-out ones are not', async () => {
  for (const [accept, coding] of [
    ['gzip', 'gzip'],
    ['br', 'br'],
    ['gzip;q=0.5, br;q=0.9', 'br'],
  ] as const) {
    const res = await request(url('/rows'), { headers: { 'accept-encoding': accept } })
    expect(res.headers['content-encoding'], accept).toBe(coding)
    expect(res.headers.vary).toBe('accept-encoding')
    const body = Buffer.from(await res.body.arrayBuffer())
    const plain = coding === 'gzip' ? zlib.gunzipSync(body) : zlib.brotliDecompressSync(body)
    expect(JSON.parse(plain.toString())).toEqual(rows)
    expect(body.length * 3).toBeLessThan(plain.length)
  }
  // fetch decodes by itself.
  expect(await (await fetch(url('/rows'))).json()).toEqual(rows)
  for (const path of ['/rows-plain', '/small']) {
    const res = await request(url(path), { headers: { 'accept-encoding': 'gzip, br' } })
    expect(res.headers['content-encoding'], path).toBeUndefined()
    await res.body.text()
  }
  const none = await request(url('/rows'), { headers: { 'accept-encoding': 'identity;q=0, nonsense' } })
  expect(none.statusCode).toBe(200)
  expect(none.headers['content-encoding']).toBeUndefined()
  expect(await none.body.json()).toEqual(rows)
})

/** GETs `path` with Accept-Encoding `coding` and decodes the body as it arrives. */
function decoded(path: string, coding: 'gzip' | 'br', headers: Record<string, string> = {}) {
  return new Promise<{ res: http.IncomingMessage; text: AsyncIterable<string>; close(): void }>((resolve, reject) => {
    const req = http.get(url(path), { headers: { 'accept-encoding': coding, ...headers } }, (res) => {
      const decoder = coding === 'gzip' ? zlib.createGunzip() : zlib.createBrotliDecompress()
      res.pipe(decoder)
      decoder.setEncoding('utf8')
      resolve({ res, text: decoder, close: () => req.destroy() })
    })
    req.on('error', reject)
  })
}

test('each SSE event decodes within 100 ms of its send, with gzip and with br', async () => {
  for (const coding of ['gzip', 'br'] as const) {
    const { res, text } = await decoded('/ticks', coding)
    expect(res.headers['content-encoding']).toBe(coding)
    let buf = ''
    const late: number[] = []
    let events = 0
    for await (const piece of text) {
      const at = Date.now()
      buf += piece
      let end: number
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, end)
        buf = buf.slice(end + 2)
        const data = frame.split('\n').find((l) => l.startsWith('data: '))
        if (!data) continue
        events++
        late.push(at - JSON.parse(data.slice(6)).sentMs)
      }
    }
    expect(events, coding).toBe(4)
    expect(Math.max(...late), `${coding}: ${late.join(', ')} ms`).toBeLessThan(100)
  }
})

test('a channel replays its history and streams live events compressed', async () => {
  const news = app.channel('news')
  for (let i = 0; i < 3; i++) news.publish(`old ${i}`, { id: i })
  const { res, text, close } = await decoded('/news', 'gzip', { 'last-event-id': '0' })
  expect(res.headers['content-encoding']).toBe('gzip')
  let seen = ''
  for await (const piece of text) {
    seen += piece
    if (seen.includes('data: old 2\n') && !seen.includes('live')) news.publish('live')
    if (seen.includes('data: live\n')) break
  }
  close()
  expect(seen).not.toContain('data: old 0\n')
  expect(seen).toContain('data: old 1\n')
})

test('bad compression options are refused', () => {
  expect(() => createApp({ compression: { encodings: ['lzma' as 'gzip'] } })).toThrow(RatError)
  expect(() => createApp({ compression: 'yes' as never })).toThrow(RatError)
})
