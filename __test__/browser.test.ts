// The demo pages in a real browser (found by support/browser.ts) driven by playwright-core.
// Screenshots land in test-output/screenshots/ (gitignored).
import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createChat } from '../examples/chat.js'
import { createLiveTable } from '../examples/live-table.js'
import { createLogTail } from '../examples/log-tail.js'
import { createStreamingDemo } from '../examples/streaming-demo.js'
import { createUploadProgress } from '../examples/upload-progress.js'
import selfsigned from 'selfsigned'
import { createApp, html, type App } from '../ts/index.js'
import { findBrowser } from './support/browser.js'

const SHOTS = join(__dirname, '..', 'test-output', 'screenshots')

const apps: App[] = []
let browser: Browser | undefined
const pageErrors: string[] = []

async function serve(app: App): Promise<string> {
  apps.push(app)
  const { port } = await app.listen({ port: 0 })
  return `http://127.0.0.1:${port}`
}

async function newPage(): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1280, height: 860 } })
  page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`))
  return page
}

beforeAll(async () => {
  // No silent skip: findBrowser throws, saying how to get a browser, when it finds none.
  const { executablePath, source, env } = await findBrowser()
  console.log(`browser tests: ${executablePath} (${source})`)
  mkdirSync(SHOTS, { recursive: true })
  browser = await chromium.launch({
    executablePath,
    env,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
  })
})

// A script error on a page fails the test that loaded it.
afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([])
})

afterAll(async () => {
  await browser?.close()
  await Promise.all(apps.map((a) => a.close(200)))
})

test('live table: start, rows and counters change, stop closes the EventSource', async () => {
  const app = createLiveTable({ updateIntervalMs: 300, heartbeatIntervalMs: 1000 })
  const base = await serve(app)
  const page = await newPage()
  await page.goto(base)
  await expect.poll(() => page.locator('#rows tr[data-id]').count()).toBeGreaterThanOrEqual(3)
  const firstRows = await page.locator('#rows').innerText()
  expect(await page.locator('#stat-updates').textContent()).toBe('0')

  await page.click('#start')
  await expect.poll(() => page.locator('#status-text').textContent()).toBe('Live')
  // Within a few seconds: several changes, seen in the counters, the table and the log.
  await expect.poll(() => page.locator('#stat-updates').textContent().then(Number), { timeout: 5000 }).toBeGreaterThanOrEqual(4)
  expect(await page.locator('#rows').innerText()).not.toBe(firstRows)
  const records = await page.locator('#stat-records').textContent()
  expect(Number(records)).toBeGreaterThanOrEqual(3)
  expect(await page.locator('#stat-average').textContent()).toMatch(/^\d+\.\d$/)
  expect(await page.locator('#rows tr[data-id]').count()).toBe(Number(records))
  expect(await page.locator('#log .entry.success').count()).toBeGreaterThanOrEqual(3)
  expect(await page.evaluate(() => (window as any).liveTable.eventSource.readyState)).toBe(1)
  await page.screenshot({ path: join(SHOTS, 'live-table.png'), fullPage: true })

  const sessionId = await page.evaluate(() => (window as any).liveTable.sessionId as string)
  expect(app.connections(sessionId)).toBe(1)
  await page.click('#stop')
  expect(await page.evaluate(() => (window as any).liveTable.eventSource.readyState)).toBe(2)
  await expect.poll(() => page.locator('#status-text').textContent()).toBe('Stopped')
  await expect.poll(() => app.sessions().length).toBe(0)
  await expect.poll(() => app.connections()).toBe(0)
  const after = await page.locator('#stat-updates').textContent()
  await page.waitForTimeout(700)
  expect(await page.locator('#stat-updates').textContent()).toBe(after)
  await page.screenshot({ path: join(SHOTS, 'live-table-stopped.png'), fullPage: true })
  await page.close()
})

test('streaming demo: every panel fills', async () => {
  const base = await serve(
    createStreamingDemo({ sseIntervalMs: 200, sseUpdates: 4, chunkDelayMs: 300, itemDelayMs: 150, binaryChunks: 5, binaryChunkBytes: 2048 }),
  )
  const page = await newPage()
  await page.goto(base)
  await expect.poll(() => page.locator('#metrics').textContent()).toMatch(/requests \d+/)
  await page.click('#start-all')
  const panels = ['sse', 'chunked', 'json', 'text', 'binary']
  // While streaming, data is already on the page before the streams end.
  await expect.poll(() => page.evaluate(() => (window as any).demo.panels.chunked.items)).toBeGreaterThanOrEqual(1)
  expect(await page.evaluate(() => (window as any).demo.panels.chunked.status)).toBe('streaming')
  await expect
    .poll(() => page.evaluate((keys) => keys.map((k) => (window as any).demo.panels[k].status), panels), { timeout: 8000 })
    .toEqual(panels.map(() => 'done'))
  const state = await page.evaluate(() => (window as any).demo.panels)
  expect(state.sse.items).toBe(5) // connected + 4 updates
  expect(state.chunked.items).toBe(4)
  expect(state.json.items).toBe(5)
  expect(state.text.items).toBe(5)
  expect(state.binary.bytes).toBe(5 * 2048)
  for (const k of panels) expect(await page.locator(`#panel-${k} .out div`).count(), k).toBeGreaterThanOrEqual(3)
  await expect.poll(() => page.locator('#metrics').textContent(), { timeout: 3000 }).toMatch(/SSE events [1-9]/)
  await page.screenshot({ path: join(SHOTS, 'streaming-demo.png'), fullPage: true })
  await page.close()
})

test('upload: the progress bar reaches 100% and the download link works', async () => {
  const base = await serve(createUploadProgress({ progressStepBytes: 64 * 1024, readDelayMs: 40 }))
  const page = await newPage()
  await page.goto(base)
  const bytes = Buffer.alloc(400 * 1024)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff
  await page.setInputFiles('#file', { name: 'sample.bin', mimeType: 'application/octet-stream', buffer: bytes })
  await page.click('#upload')
  // Progress moves through intermediate values before the end.
  await expect.poll(() => page.evaluate(() => (window as any).upload.progress)).toBeGreaterThan(0)
  await expect.poll(() => page.locator('#bar-text').textContent(), { timeout: 8000 }).toBe('100%')
  await expect.poll(() => page.evaluate(() => (window as any).upload.done)).toBe(true)
  const events: Array<{ type: string; progress?: number }> = await page.evaluate(() => (window as any).upload.events)
  expect(events[0].type).toBe('init')
  // One POST, read as it arrives: several progress steps of at least 64 KiB, ending at 100.
  const steps = events.filter((e) => e.type === 'progress')
  expect(steps.length).toBeGreaterThanOrEqual(2)
  expect(steps.length).toBeLessThanOrEqual(7)
  expect(steps.at(-1)!.progress).toBe(100)
  expect(events.at(-1)!.type).toBe('completed')
  const href = await page.locator('#download').getAttribute('href')
  expect(href).toMatch(/^\/api\/download\/[A-Za-z0-9]{16}$/)
  // The link works: the browser downloads the same bytes (compared by size and sha256).
  const downloaded = await page.evaluate(async (url) => {
    const b = await (await fetch(url)).arrayBuffer()
    const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', b))
    return { size: b.byteLength, sha256: Array.from(hash, (x) => x.toString(16).padStart(2, '0')).join('') }
  }, href!)
  expect(downloaded).toEqual({ size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
  await page.screenshot({ path: join(SHOTS, 'upload-progress.png'), fullPage: true })
  await page.close()
})

test('log tail: lines appear live', async () => {
  const app = createLogTail({ writeIntervalMs: 150, backlogLines: 5 })
  const base = await serve(app)
  const page = await newPage()
  await page.goto(base)
  await expect.poll(() => page.locator('#status-text').textContent()).toBe('following app.log')
  const first = await page.evaluate(() => (window as any).tail.lines as number)
  await expect.poll(() => page.evaluate(() => (window as any).tail.lines as number)).toBeGreaterThanOrEqual(first + 4)
  await page.fill('#note', 'written from the browser test')
  await page.click('#write')
  await expect.poll(() => page.locator('#out').textContent()).toContain('NOTE  written from the browser test')
  await page.screenshot({ path: join(SHOTS, 'log-tail.png'), fullPage: true })
  expect(app.activeTails()).toBe(1)
  await page.click('#toggle')
  await expect.poll(() => app.activeTails()).toBe(0)
  await page.close()
})

test('over HTTPS a page holds 20 EventSources on one HTTP/2 connection, all receiving', async () => {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' })
  const app = createApp({ heartbeatMs: 0 })
  const ticks = app.channel('ticks')
  app.sse('/ticks', ticks)
  app.html(
    '/',
    `<!doctype html><body><script>
      window.counts = Array(20).fill(0)
      for (let i = 0; i < 20; i++) new EventSource('/ticks').onmessage = () => window.counts[i]++
    </script></body>`,
  )
  apps.push(app)
  const { port } = await app.listen({ port: 0, tls: { cert: pems.cert, key: pems.private } })
  const timer = setInterval(() => ticks.publish(Date.now()), 100)
  const context = await browser!.newContext({ ignoreHTTPSErrors: true })
  try {
    const page = await context.newPage()
    page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`))
    await page.goto(`https://127.0.0.1:${port}/`)
    await expect
      .poll(() => page.evaluate(() => (window as any).counts.filter((n: number) => n >= 2).length), { timeout: 10_000 })
      .toBe(20)
    expect(await page.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol)).toBe('h2')
    expect(ticks.subscribers).toBe(20)
    // HTTP/1.1 would need 20 connections (and a browser allows 6 per origin).
    expect(app.metrics().activeConnections).toBeLessThanOrEqual(2)
  } finally {
    clearInterval(timer)
    await context.close()
  }
})

test('over HTTPS a page opens 8 WebSockets on its one HTTP/2 connection (RFC 8441), compressed; over HTTP each takes a connection', async () => {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' })
  const long = 'over one connection; '.repeat(200)
  const opened = async (app: App, base: string, page: Page) => {
    const echoed = await page.evaluate(async ({ long, base }) => {
      const out: Array<{ data: string; extensions: string }> = []
      for (let i = 0; i < 8; i++) {
        const ws = new WebSocket(base.replace('http', 'ws') + '/echo')
        await new Promise((resolve, reject) => {
          ws.onopen = resolve
          ws.onerror = reject
        })
        const back = new Promise<string>((resolve) => (ws.onmessage = (e) => resolve(e.data)))
        ws.send(`${i} ${long}`)
        out.push({ data: await back, extensions: ws.extensions })
      }
      return out
    }, { long, base })
    expect(echoed.map((e) => e.data)).toEqual(Array.from({ length: 8 }, (_, i) => `${i} ${long}`))
    for (const e of echoed) expect(e.extensions).toContain('permessage-deflate')
    // The client ports the upgrades came from: one per connection.
    return new Set(ports.get(app)).size
  }
  const ports = new Map<App, number[]>()
  const make = () => {
    const app = createApp({ heartbeatMs: 0 })
    ports.set(app, [])
    app.ws('/echo', { open: (_ws, req) => void ports.get(app)!.push(req.remotePort!), message: (ws, data) => void ws.send(data) }, { compression: true })
    app.html('/', '<!doctype html><title>ws</title>')
    apps.push(app)
    return app
  }
  const secure = make()
  const { port } = await secure.listen({ port: 0, tls: { cert: pems.cert, key: pems.private } })
  const context = await browser!.newContext({ ignoreHTTPSErrors: true })
  try {
    const page = await context.newPage()
    page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`))
    const base = `https://127.0.0.1:${port}`
    await page.goto(base)
    expect(await opened(secure, base, page)).toBe(1)
  } finally {
    await context.close()
  }
  const plain = make()
  const page = await newPage()
  const base = await serve(plain)
  await page.goto(base)
  expect(await opened(plain, base, page)).toBe(8)
  await page.close()
})

test('CORS: a page on another origin reads an allowed API and its EventSource; a disallowed origin is blocked', async () => {
  const page0 = createApp({ heartbeatMs: 0 })
  page0.html('/', '<!doctype html><body>cross-origin page</body>')
  apps.push(page0)
  const { port: pagePort } = await page0.listen({ port: 0 })
  const origin = `http://127.0.0.1:${pagePort}`
  const api = (allowed: string) => {
    const a = createApp({ heartbeatMs: 0, cors: { origin: allowed } })
    a.post('/api/echo', async (req) => ({ got: await req.json() }))
    a.sse('/events', async function* () {
      yield 'one'
      yield 'two'
    })
    apps.push(a)
    return a.listen({ port: 0 }).then(({ port }) => `http://127.0.0.1:${port}`)
  }
  const allowedApi = await api(origin)
  const otherApi = await api('https://elsewhere.example')
  const page = await newPage()
  await page.goto(origin)
  const result = await page.evaluate(async ([a, b]) => {
    // A JSON POST needs a preflight.
    const posted = await fetch(`${a}/api/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' }).then((r) => r.json())
    const events = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = []
      const es = new EventSource(`${a}/events`)
      es.onmessage = (e) => {
        got.push(e.data)
        if (got.length === 2) {
          es.close()
          resolve(got)
        }
      }
      es.onerror = () => reject(new Error('EventSource failed'))
    })
    const blocked = await fetch(`${b}/api/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).then(
      () => 'read',
      (e: Error) => e.name,
    )
    return { posted, events, blocked }
  }, [allowedApi, otherApi])
  expect(result).toEqual({ posted: { got: { n: 1 } }, events: ['one', 'two'], blocked: 'TypeError' })
})

test('compression: EventSource decodes gzip, br and zstd streams live, a channel too', async () => {
  const page = await newPage()
  for (const coding of ['gzip', 'br', 'zstd'] as const) {
    const app = createApp({ compression: { encodings: [coding] }, heartbeatMs: 0 })
    const news = app.channel('news')
    app.get('/', () => html('<!doctype html><title>compressed</title>'))
    app.get('/rows', () => Array.from({ length: 100 }, (_, i) => ({ id: i, name: `row ${i}` })))
    app.sse('/ticks', async (_req, stream) => {
      // The head and a first coded piece go out at once, so every event below is measured
      // on an open stream (not the browser's first connection to the page's origin).
      stream.comment('open')
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 300))
        stream.send({ i, sentMs: Date.now(), pad: 'y'.repeat(200) })
      }
      // The page closes the EventSource once it has all four.
      await new Promise((r) => setTimeout(r, 5000))
    })
    app.sse('/news', news)
    const base = await serve(app)
    await page.goto(base + '/')
    const got = await page.evaluate(async () => {
      const rows = await fetch('/rows')
      const encoding = rows.headers.get('content-encoding')
      const count = ((await rows.json()) as unknown[]).length
      const late = await new Promise<number[]>((resolve, reject) => {
        const es = new EventSource('/ticks')
        const out: number[] = []
        es.onmessage = (e) => {
          out.push(Date.now() - JSON.parse(e.data).sentMs)
          if (out.length === 4) {
            es.close()
            resolve(out)
          }
        }
        setTimeout(() => reject(new Error(`only ${out.length} events`)), 5000)
      })
      return { encoding, count, late }
    })
    expect(got.encoding, coding).toBe(coding)
    expect(got.count).toBe(100)
    expect(Math.max(...got.late), `${coding}: ${got.late.join(', ')} ms`).toBeLessThan(100)
    // A channel's stream (br is not offered for channels: it goes as it is).
    const live = page.evaluate(
      () =>
        new Promise<string>((resolve) => {
          const es = new EventSource('/news')
          es.onmessage = (e) => {
            es.close()
            resolve(e.data)
          }
        }),
    )
    await expect.poll(() => news.subscribers, { timeout: 5000 }).toBe(1)
    news.publish({ hello: coding })
    expect(JSON.parse(await live)).toEqual({ hello: coding })
  }
  await page.close()
})

test("WebSocket permessage-deflate: Chromium's compressed messages are read and echoed compressed, a channel's too", async () => {
  const app = createApp()
  const feed = app.channel('z-feed')
  app.ws('/z/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { compression: true })
  app.ws('/z/feed', feed, { compression: true })
  app.html('/', '<!doctype html><title>ws</title>')
  const base = await serve(app)
  const page = await newPage()
  await page.goto(base)
  const long = 'chromium compresses every message; '.repeat(600)
  const echoed = await page.evaluate(async (long) => {
    const ws = new WebSocket(location.origin.replace('http', 'ws') + '/z/echo')
    ws.binaryType = 'arraybuffer'
    const got: Array<string | number[]> = []
    await new Promise((resolve, reject) => {
      ws.onopen = resolve
      ws.onerror = reject
    })
    const done = new Promise<void>((resolve) => {
      ws.onmessage = (e) => {
        got.push(typeof e.data === 'string' ? e.data : Array.from(new Uint8Array(e.data)))
        if (got.length === 3) resolve()
      }
    })
    ws.send(long)
    ws.send('short')
    ws.send(new Uint8Array(5000).map((_, i) => i % 7))
    await done
    ws.close()
    return { extensions: ws.extensions, got }
  }, long)
  expect(echoed.extensions).toContain('permessage-deflate')
  expect(echoed.got[0]).toBe(long)
  expect(echoed.got[1]).toBe('short')
  expect(echoed.got[2]).toEqual(Array.from({ length: 5000 }, (_, i) => i % 7))

  const live = page.evaluate(() => new Promise<{ extensions: string; data: string }>((resolve) => {
    const ws = new WebSocket(location.origin.replace('http', 'ws') + '/z/feed')
    ws.onmessage = (e) => resolve({ extensions: ws.extensions, data: e.data })
  }))
  await expect.poll(() => feed.subscribers, { timeout: 5000 }).toBe(1)
  const rows = { rows: Array.from({ length: 100 }, (_, i) => ({ id: i, name: 'row' })) }
  feed.publish(rows)
  const got = await live
  expect(got.extensions).toContain('permessage-deflate')
  expect(JSON.parse(got.data)).toEqual(rows)
  await page.close()
})

test('chat: a message sent over WebSocket comes down through the channel, over WebSocket and over SSE', async () => {
  const app = createChat()
  const base = await serve(app)
  const writer = await newPage()
  await writer.goto(base)
  const reader = await newPage()
  await reader.goto(`${base}/?via=sse`)
  for (const p of [writer, reader]) await expect.poll(() => p.evaluate(() => (window as any).chat.open)).toBe(true)
  // Two sockets and the reader's EventSource.
  await expect.poll(() => app.channel('chat').subscribers).toBe(3)
  await writer.fill('#name', 'ada')
  await writer.fill('#text', 'hello from chromium')
  await writer.click('#send')
  for (const p of [writer, reader]) {
    await expect.poll(() => p.locator('#messages li').count()).toBe(1)
    expect(await p.locator('#messages li b').textContent()).toBe('ada')
    expect(await p.locator('#messages li').textContent()).toBe('adahello from chromium')
  }
  expect(await writer.locator('#text').inputValue()).toBe('')
  await writer.screenshot({ path: join(SHOTS, 'chat.png'), fullPage: true })
  await writer.close()
  await reader.close()
})
