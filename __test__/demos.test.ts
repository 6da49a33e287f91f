// The examples' HTTP behaviour, with real clients: undici's fetch, the `eventsource` package
// and, where a connection must be held open and dropped, node:net.
import { createHash, randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { appendFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { Script } from 'node:vm'
import { EventSource } from 'eventsource'
import { fetch } from 'undici'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createLiveTable, type LiveTableApp } from '../examples/live-table.js'
import { createLogTail, type LogTailApp } from '../examples/log-tail.js'
import { binaryChunk, CHUNKED_STEPS, createStreamingDemo } from '../examples/streaming-demo.js'
import { createUploadProgress, type UploadProgressApp } from '../examples/upload-progress.js'
import type { App } from '../ts/index.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

async function until<T>(what: string, check: () => T | undefined | false | null, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = check()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

async function start(app: App): Promise<string> {
  const { port } = await app.listen({ port: 0 })
  return `http://127.0.0.1:${port}`
}

interface Arrival<T> {
  at: number
  value: T
}

/** Reads a streamed body, noting when each read arrived. */
async function reads(url: string): Promise<{ status: number; type: string | null; chunks: Arrival<Uint8Array>[] }> {
  const res = await fetch(url)
  const chunks: Arrival<Uint8Array>[] = []
  const reader = res.body!.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    chunks.push({ at: Date.now(), value })
  }
  return { status: res.status, type: res.headers.get('content-type'), chunks }
}

/** The lines of a streamed text body, each with the time its read arrived. */
async function lines(url: string) {
  const r = await reads(url)
  const out: Arrival<string>[] = []
  const decoder = new TextDecoder()
  let pending = ''
  for (const c of r.chunks) {
    const parts = (pending + decoder.decode(c.value, { stream: true })).split('\n')
    pending = parts.pop()!
    for (const p of parts) out.push({ at: c.at, value: p })
  }
  return { ...r, lines: out }
}

/** An EventSource that records every message (as JSON) and named event. */
function watch(url: string, names: string[] = []) {
  const es = new EventSource(url, { fetch })
  const events: Array<{ event: string; data: any; at: number }> = []
  const errors: Array<{ code?: number; message?: string }> = []
  const record = (event: string) => (e: MessageEvent) => {
    let data: unknown = e.data
    try {
      data = JSON.parse(e.data)
    } catch {
      // a plain string
    }
    events.push({ event, data, at: Date.now() })
  }
  es.onmessage = record('message')
  for (const n of names) es.addEventListener(n, record(n) as never)
  es.onerror = (e) => errors.push({ code: (e as { code?: number }).code, message: (e as { message?: string }).message })
  return { es, events, errors }
}

/** Parses SSE frames from a fetch body until the stream ends or `stop` says so. */
async function sseFrames(res: Awaited<ReturnType<typeof fetch>>, stop: (frames: any[]) => boolean = () => false) {
  const frames: any[] = []
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return { frames, ended: true }
    buf += decoder.decode(value, { stream: true })
    let i
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i)
      buf = buf.slice(i + 2)
      const data = frame
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n')
      if (data) frames.push(JSON.parse(data))
    }
    if (stop(frames)) {
      await reader.cancel()
      return { frames, ended: false }
    }
  }
}

/** A raw HTTP/1.1 GET on a socket we can drop at will; resolves with the socket once headers are in. */
function rawGet(base: string, path: string): Promise<{ socket: Socket; head: string }> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    let text = ''
    socket.on('error', reject)
    socket.on('data', function onData(d) {
      text += d.toString('utf8')
      const end = text.indexOf('\r\n\r\n')
      if (end >= 0) {
        socket.off('data', onData)
        resolve({ socket, head: text.slice(0, end) })
      }
    })
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nAccept: text/event-stream\r\n\r\n`)
  })
}

/** The page's inline script compiles (the browser test runs it for real). */
function expectValidScript(html: string) {
  const m = /<script>([\s\S]*?)<\/script>/.exec(html)
  expect(m, 'an inline <script>').not.toBeNull()
  expect(() => new Script(m![1])).not.toThrow()
}

const spread = (arrivals: Array<{ at: number }>) => arrivals[arrivals.length - 1].at - arrivals[0].at

describe('streaming demo', () => {
  const app = createStreamingDemo({ sseIntervalMs: 100, sseUpdates: 3, chunkDelayMs: 150, itemDelayMs: 80, binaryChunks: 4, binaryChunkBytes: 1024 })
  let base = ''
  beforeAll(async () => {
    base = await start(app)
  })
  afterAll(() => app.close(200))

  test('the page loads, with a panel per stream and the metrics route', async () => {
    const res = await fetch(`${base}/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    const page = await res.text()
    for (const url of ['/sse', '/chunked', '/json-stream', '/text-stream', '/binary-stream', '/api/metrics']) expect(page).toContain(`'${url}'`)
    expect(page).toContain('new EventSource')
    expect(page).toContain('getReader()')
    expectValidScript(page)
  })

  test('/sse: a connected event, then JSON updates over time, then done', async () => {
    const { es, events } = watch(`${base}/sse`, ['connected', 'update', 'done'])
    try {
      await until('done event', () => events.some((e) => e.event === 'done'))
      expect(events.map((e) => e.event)).toEqual(['connected', 'update', 'update', 'update', 'done'])
      const updates = events.filter((e) => e.event === 'update')
      expect(updates.map((e) => e.data.counter)).toEqual([1, 2, 3])
      expect(updates[0].data).toMatchObject({ message: 'Update #1', timestamp: expect.any(String) })
      expect(spread(updates)).toBeGreaterThanOrEqual(150)
    } finally {
      es.close()
    }
  })

  test('/chunked: the steps arrive apart, as they are produced', async () => {
    const r = await lines(`${base}/chunked`)
    expect(r.status).toBe(200)
    expect(r.type).toMatch(/^text\/plain/)
    expect(r.lines.map((l) => l.value)).toEqual(CHUNKED_STEPS)
    expect(spread(r.lines)).toBeGreaterThanOrEqual(3 * 150 - 30)
    expect(r.lines[1].at - r.lines[0].at).toBeGreaterThanOrEqual(120)
  })

  test('/json-stream: NDJSON objects, spaced out', async () => {
    const r = await lines(`${base}/json-stream`)
    expect(r.type).toBe('application/x-ndjson')
    const items = r.lines.map((l) => JSON.parse(l.value))
    expect(items.map((i) => i.name)).toEqual(['Alice', 'Bob', 'Charlie', 'Dana', 'Eve'])
    expect(spread(r.lines)).toBeGreaterThanOrEqual(4 * 80 - 30)
  })

  test('/text-stream: lines, spaced out', async () => {
    const r = await lines(`${base}/text-stream`)
    expect(r.type).toMatch(/^text\/plain/)
    expect(r.lines).toHaveLength(5)
    expect(r.lines[0].value).toBe('1: First line of text')
    expect(spread(r.lines)).toBeGreaterThanOrEqual(4 * 80 - 30)
  })

  test('/binary-stream: the exact bytes, in chunks over time', async () => {
    const r = await reads(`${base}/binary-stream`)
    expect(r.type).toBe('application/octet-stream')
    const all = Buffer.concat(r.chunks.map((c) => c.value))
    expect(all.equals(Buffer.concat([0, 1, 2, 3].map((i) => binaryChunk(i, 1024))))).toBe(true)
    expect(r.chunks.length).toBeGreaterThanOrEqual(2)
    expect(spread(r.chunks)).toBeGreaterThanOrEqual(3 * 80 - 30)
  })

  test('/api/metrics: the engine counters as JSON', async () => {
    const res = await fetch(`${base}/api/metrics`)
    expect(res.headers.get('content-type')).toBe('application/json')
    const m = (await res.json()) as Record<string, number>
    expect(m.totalRequests).toBeGreaterThan(0)
    expect(m).toHaveProperty('activeStreams')
    expect(m.uptimeMs).toBeGreaterThanOrEqual(0)
  })
})

describe('live table', () => {
  // A seeded random source, so the sequence of operations is the same on every run.
  let seed = 7
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const app: LiveTableApp = createLiveTable({
    updateIntervalMs: 40,
    heartbeatIntervalMs: 250,
    maxSessionMs: 20_000,
    maxConnectionsPerSession: 2,
    maxTotalConnections: 3,
    random,
  })
  let base = ''
  beforeAll(async () => {
    base = await start(app)
  })
  afterAll(() => app.close(200))

  const startSession = async () => {
    const res = await fetch(`${base}/api/start`, { method: 'POST' })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { status: string; session_id: string }
    expect(body.status).toBe('success')
    return body.session_id
  }
  const stop = (id: string) => fetch(`${base}/api/stop/${id}`, { method: 'POST' })

  test('the page and /api/data', async () => {
    const page = await fetch(`${base}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await page.text()
    expectValidScript(html)
    for (const id of ['id="start"', 'id="stop"', 'id="status"', 'id="stat-records"', 'id="stat-updates"', 'id="stat-average"', 'id="rows"', 'id="log"']) {
      expect(html).toContain(id)
    }
    const data = (await (await fetch(`${base}/api/data`)).json()) as { status: string; data: any[]; timestamp: string }
    expect(data.status).toBe('success')
    expect(data.data.length).toBeGreaterThanOrEqual(3)
    expect(data.data[0]).toMatchObject({ id: expect.any(Number), name: expect.any(String), age: expect.any(Number), city: expect.any(String), score: expect.any(Number), status: expect.any(String) })
  })

  test('start gives a 16-character id; the stream sends init, then add/update/delete and heartbeats; stop ends it', async () => {
    const id = await startSession()
    expect(id).toMatch(/^[A-Za-z0-9]{16}$/)
    const { es, events } = watch(`${base}/api/stream/${id}`)
    try {
      const seen = (t: string) => events.some((e) => e.data.type === t)
      await until('add, update, delete and heartbeat', () => ['add', 'update', 'delete', 'heartbeat'].every(seen), 8000)
      expect(events[0].data).toMatchObject({ type: 'init', session_id: id })
      expect(events[0].data.data.length).toBeGreaterThanOrEqual(3)
      const changes = events.filter((e) => ['add', 'update', 'delete'].includes(e.data.type)).map((e) => e.data)
      for (const c of changes) {
        expect(c.table_data.length).toBeGreaterThanOrEqual(3)
        expect(c.message).toEqual(expect.any(String))
        expect(c.data.id).toEqual(expect.any(Number))
      }
      expect(changes.map((c) => c.generation_count)).toEqual(changes.map((_, i) => i + 1))
      expect(app.connections(id)).toBe(1)

      const res = await stop(id)
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ status: 'success', session_id: id })
      await until('end event', () => seen('end'))
      expect(events.at(-1)!.data.type).toBe('end')
      await until('connection released', () => app.connections() === 0)
      expect(app.sessions()).not.toContain(id)
    } finally {
      es.close()
    }
  })

  test('one publish per change reaches every connection of the session', async () => {
    const id = await startSession()
    const channel = app.channel(`session:${id}`) // the session's channel (already created by start)
    const a = fetch(`${base}/api/stream/${id}`).then((r) => sseFrames(r))
    const b = fetch(`${base}/api/stream/${id}`).then((r) => sseFrames(r))
    await until('two connections', () => app.connections(id) === 2)
    expect(channel.subscribers).toBe(2)
    await sleep(300)
    await stop(id)
    const [fa, fb] = await Promise.all([a, b])
    expect(fa.ended && fb.ended).toBe(true)
    const published = (f: { frames: any[] }) => f.frames.filter((x) => x.type !== 'init') // init is per connection
    const [na, nb] = [published(fa).length, published(fb).length]
    const m = channel.metrics()
    // Every copy the engine queued reached a client, yet each change was published once.
    expect(m.delivered).toBe(na + nb)
    expect(m.published).toBeGreaterThanOrEqual(Math.max(na, nb))
    expect(m.published).toBeLessThan(na + nb)
    const tail = (f: { frames: any[] }) => published(f).slice(-5).map((x) => `${x.type}:${x.generation_count ?? ''}`)
    expect(tail(fa).at(-1)).toBe('end:')
    expect(tail(fa)).toEqual(tail(fb))
  })

  test('the table never goes below 3 rows', async () => {
    const deleting = createLiveTable({ updateIntervalMs: 20, random: () => 0.95 }) // every draw is "delete"
    const url = await start(deleting)
    try {
      const id = ((await (await fetch(`${url}/api/start`, { method: 'POST' })).json()) as { session_id: string }).session_id
      const res = await fetch(`${url}/api/stream/${id}`)
      const { frames } = await sseFrames(res, (f) => f.length >= 8)
      // The session ticks from /api/start on, so a delete may happen before the stream
      // subscribes: count from the init snapshot the stream begins with.
      expect(frames[0].type).toBe('init')
      const rowsAtInit = (frames[0].data as unknown[]).length
      expect(rowsAtInit).toBeGreaterThanOrEqual(3)
      const ops = frames.slice(1).filter((f) => f.type !== 'heartbeat')
      const deletes = rowsAtInit - 3
      expect(ops.slice(0, deletes).map((f) => f.type)).toEqual(Array(deletes).fill('delete')) // down to 3 rows
      expect(ops.slice(deletes).length).toBeGreaterThan(0)
      expect(ops.slice(deletes).every((f) => f.type === 'update' && f.table_data.length === 3)).toBe(true)
      expect(deleting.table()).toHaveLength(3)
    } finally {
      await deleting.close(100)
    }
  })

  test('a session ends by itself after maxSessionMs', async () => {
    const short = createLiveTable({ updateIntervalMs: 50, maxSessionMs: 300 })
    const url = await start(short)
    try {
      const id = ((await (await fetch(`${url}/api/start`, { method: 'POST' })).json()) as { session_id: string }).session_id
      const t0 = Date.now()
      const { frames, ended } = await sseFrames(await fetch(`${url}/api/stream/${id}`))
      expect(ended).toBe(true)
      expect(Date.now() - t0).toBeGreaterThanOrEqual(200)
      expect(frames.at(-1)).toMatchObject({ type: 'end', session_id: id, message: expect.stringMatching(/ended after/) })
      expect(short.sessions()).toEqual([])
      expect((await fetch(`${url}/api/stream/${id}`)).status).toBe(404)
    } finally {
      await short.close(100)
    }
  })

  test('malformed ids get 400, unknown ones 404, each with a message', async () => {
    for (const path of ['/api/stream/abc', '/api/stream/abcdefgh-bcdefgh', '/api/stream/abcdefghijklmnopq']) {
      const res = await fetch(base + path)
      expect(res.status, path).toBe(400)
      expect(((await res.json()) as { error: string }).error).toMatch(/invalid session id/)
    }
    const bad = await fetch(`${base}/api/stop/short`, { method: 'POST' })
    expect(bad.status).toBe(400)
    for (const res of [await fetch(`${base}/api/stream/AAAAAAAAAAAAAAAA`), await stop('AAAAAAAAAAAAAAAA')]) {
      expect(res.status).toBe(404)
      expect(((await res.json()) as { error: string }).error).toMatch(/unknown session AAAAAAAAAAAAAAAA/)
    }
  })

  test('429 past the per-session and total limits; a dropped connection frees its slot', async () => {
    const one = await startSession()
    const two = await startSession()
    const held: Socket[] = []
    try {
      for (let i = 0; i < 2; i++) {
        const { socket, head } = await rawGet(base, `/api/stream/${one}`)
        expect(head).toMatch(/^HTTP\/1\.1 200/)
        held.push(socket)
      }
      const perSession = await fetch(`${base}/api/stream/${one}`)
      expect(perSession.status).toBe(429)
      expect(((await perSession.json()) as { error: string }).error).toMatch(/at most 2 per session/)

      const third = await rawGet(base, `/api/stream/${two}`)
      expect(third.head).toMatch(/^HTTP\/1\.1 200/)
      held.push(third.socket)
      expect(app.connections()).toBe(3)
      const total = await fetch(`${base}/api/stream/${two}`)
      expect(total.status).toBe(429)
      expect(((await total.json()) as { error: string }).error).toMatch(/at most 3 in total/)

      held.shift()!.destroy() // a client of session one leaves
      await until('slot released', () => app.connections() === 2)
      const again = await rawGet(base, `/api/stream/${two}`)
      expect(again.head).toMatch(/^HTTP\/1\.1 200/)
      held.push(again.socket)
    } finally {
      for (const s of held) s.destroy()
      await stop(one)
      await stop(two)
    }
    await until('all released', () => app.connections() === 0)
  })
})

describe('upload progress', () => {
  const app: UploadProgressApp = createUploadProgress({ progressStepBytes: 64 * 1024, readDelayMs: 2, heartbeatIntervalMs: 150 })
  let base = ''
  beforeAll(async () => {
    base = await start(app)
  })
  afterAll(() => app.close(200))

  const create = async (size: number, filename = 'data.bin') => {
    const res = await fetch(`${base}/api/upload`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ filename, size, type: 'application/octet-stream' }),
    })
    expect(res.status).toBe(200)
    return (await res.json()) as { session_id: string; upload_url: string; progress_url: string }
  }

  test('the page loads', async () => {
    const res = await fetch(`${base}/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await res.text()
    expect(html).toContain('type="file"')
    expectValidScript(html)
  })

  test('one POST read as it arrives reports progress over SSE up to completed; the download returns the same bytes', async () => {
    const file = randomBytes(1_500_000)
    const s = await create(file.length, 'résumé 1.bin')
    expect(s.session_id).toMatch(/^[A-Za-z0-9]{16}$/)
    const { es, events } = watch(base + s.progress_url)
    try {
      await until('init', () => events.length > 0)
      expect(events[0].data).toMatchObject({ type: 'init', session_id: s.session_id, file_size: 1_500_000, progress: 0, completed: false })
      const res = await fetch(`${base}${s.upload_url}`, { method: 'POST', body: file })
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ received: 1_500_000, total: 1_500_000, progress: 100, completed: true })
      await until('completed', () => events.some((e) => e.data.type === 'completed'))
      const progress = events.filter((e) => e.data.type === 'progress').map((e) => e.data)
      // Several steps while the body was arriving, each at least 64 KiB after the one before.
      expect(progress.length).toBeGreaterThanOrEqual(3)
      for (let i = 1; i < progress.length; i++) {
        expect(progress[i].received - progress[i - 1].received).toBeGreaterThanOrEqual(i === progress.length - 1 ? 1 : 65536)
        expect(progress[i].progress).toBeGreaterThan(progress[i - 1].progress)
      }
      expect(progress.at(-1)).toMatchObject({ received: 1_500_000, total: 1_500_000, progress: 100 })
      const done = events.find((e) => e.data.type === 'completed')!.data
      expect(done).toMatchObject({ progress: 100, file_size: 1_500_000, download_url: `/api/download/${s.session_id}` })
      expect(done.sha256).toBe(createHash('sha256').update(file).digest('hex'))

      const dl = await fetch(base + done.download_url)
      expect(dl.status).toBe(200)
      expect(dl.headers.get('content-disposition')).toContain("filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin")
      expect(Buffer.from(await dl.arrayBuffer()).equals(file)).toBe(true)
    } finally {
      es.close()
    }

    // A late watcher gets init and completed, then the stream ends.
    const late = await sseFrames(await fetch(base + s.progress_url))
    expect(late.ended).toBe(true)
    expect(late.frames.map((f) => f.type)).toEqual(['init', 'completed'])
  })

  test('heartbeats while waiting; short or long bodies, repeats, early downloads and bad ids are refused', async () => {
    const s = await create(10)
    const res = await fetch(base + s.progress_url)
    const { frames } = await sseFrames(res, (f) => f.some((x) => x.type === 'heartbeat'))
    expect(frames[0].type).toBe('init')
    expect(frames.at(-1)).toMatchObject({ type: 'heartbeat', timestamp: expect.any(Number) })

    const early = await fetch(`${base}/api/download/${s.session_id}`)
    expect(early.status).toBe(409)
    const short = await fetch(`${base}${s.upload_url}`, { method: 'POST', body: 'hello' })
    expect(short.status).toBe(400)
    expect(((await short.json()) as { error: string }).error).toMatch(/ended after 5 of 10 bytes/)
    const tooBig = await fetch(`${base}${s.upload_url}`, { method: 'POST', body: 'x'.repeat(11) })
    expect(tooBig.status).toBe(400)
    expect(((await tooBig.json()) as { error: string }).error).toMatch(/past the announced size of 10 bytes/)
    const ok = await fetch(`${base}${s.upload_url}`, { method: 'POST', body: '0123456789' })
    expect(ok.status).toBe(200)
    expect((await fetch(`${base}${s.upload_url}`, { method: 'POST', body: '0123456789' })).status).toBe(409)

    const huge = await fetch(`${base}/api/upload`, { method: 'POST', body: JSON.stringify({ filename: 'big', size: 60 * 1024 * 1024 }) })
    expect(huge.status).toBe(413)
    expect((await fetch(`${base}/api/upload`, { method: 'POST', body: '{"size":-1}' })).status).toBe(400)
    expect((await fetch(`${base}/api/progress/nope`)).status).toBe(400)
    expect((await fetch(`${base}/api/progress/ZZZZZZZZZZZZZZZZ`)).status).toBe(404)
    expect((await fetch(`${base}/api/download/ZZZZZZZZZZZZZZZZ`)).status).toBe(404)
  })
})

describe('log tail', () => {
  const app: LogTailApp = createLogTail({ writeIntervalMs: 100, pollMs: 200, backlogLines: 3 })
  let base = ''
  beforeAll(async () => {
    base = await start(app)
  })
  afterAll(() => app.close(200))

  test('the page loads', async () => {
    const res = await fetch(`${base}/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await res.text()
    expect(html).toContain("new EventSource('/api/logs/'")
    expectValidScript(html)
  })

  test('streams lines appended after connecting, and stops watching when the client leaves', async () => {
    expect(app.activeTails()).toBe(0)
    const { es, events } = watch(`${base}/api/logs/app.log`)
    try {
      await until('connected', () => events.some((e) => e.data.type === 'connected'))
      await until('tail registered', () => app.activeTails() === 1)
      const marker = `marker-${Date.now()}`
      appendFileSync(app.logPath('app.log'), `${marker}\n`)
      const got = await until('the marker line', () => events.find((e) => e.data.message === marker))
      expect(got.data).toMatchObject({ type: 'log', service: 'app.log', backlog: false })
      // The demo's own writer keeps adding lines too.
      const before = events.length
      await until('more lines', () => events.length >= before + 2)
      expect(events.filter((e) => e.data.backlog).length).toBeLessThanOrEqual(3)
    } finally {
      es.close()
    }
    await until('tail stopped after the client left', () => app.activeTails() === 0, 3000)
  })

  test('a dropped TCP connection stops the tail too', async () => {
    const { socket, head } = await rawGet(base, '/api/logs/access.log')
    expect(head).toMatch(/^HTTP\/1\.1 200/)
    await until('tail registered', () => app.activeTails() === 1)
    socket.destroy()
    await until('tail stopped', () => app.activeTails() === 0, 3000)
  })

  test('names with path separators get 400; unknown logs 404', async () => {
    for (const name of ['..%2Fetc%2Fpasswd', 'a%5Cb.log', 'app.log%2F..%2Fsecret']) {
      const res = await fetch(`${base}/api/logs/${name}`)
      expect(res.status, name).toBe(400)
      expect(((await res.json()) as { error: string }).error).toMatch(/path separators/)
    }
    const res = await fetch(`${base}/api/logs/missing.log`)
    expect(res.status).toBe(404)
    expect(app.activeTails()).toBe(0)
  })

  test('POST appends a line that followers receive', async () => {
    const res = await fetch(`${base}/api/logs/access.log`)
    const post = fetch(`${base}/api/logs/access.log`, { method: 'POST', body: 'hello from the test' })
    const { frames } = await sseFrames(res, (f) => f.some((x) => String(x.message).endsWith('NOTE  hello from the test')))
    expect((await post).status).toBe(200)
    expect(frames[0].type).toBe('connected')
    await until('tail stopped', () => app.activeTails() === 0, 3000)
  })
})

describe.concurrent('standalone start', () => {
  /**
   * Runs an example as its own program with PORT=0 (`node --import tsx`, what `npx tsx` does
   * minus a relaying parent process); resolves with its URL once it prints it.
   */
  function run(file: string) {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'examples', file)], {
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    const url = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${file} printed no URL: ${out}`)), 25_000)
      const onData = (d: Buffer) => {
        out += d.toString()
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)
        if (m) {
          clearTimeout(timer)
          resolve(m[1])
        }
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      void exited.then(() => reject(new Error(`${file} exited early: ${out}`)))
    })
    return { child, url, exited, output: () => out }
  }

  test.each(['streaming-demo.ts', 'upload-progress.ts', 'log-tail.ts', 'chat.ts'])('%s serves its page on PORT and closes on SIGTERM', async (file) => {
    const ex = run(file)
    const url = await ex.url
    const res = await fetch(url)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    await res.text()
    ex.child.kill('SIGTERM')
    expect(await ex.exited).toBe(0)
    expect(ex.output()).toMatch(/SIGTERM: closing[\s\S]*closed/)
  }, 30_000)

  test('live-table.ts: SIGTERM ends open session streams, then exits', async () => {
    const ex = run('live-table.ts')
    const url = await ex.url
    const { session_id } = (await (await fetch(`${url}api/start`, { method: 'POST' })).json()) as { session_id: string }
    const stream = fetch(`${url}api/stream/${session_id}`).then((r) => sseFrames(r))
    await sleep(200)
    ex.child.kill('SIGTERM')
    const { frames, ended } = await stream
    expect(ended).toBe(true)
    expect(frames[0].type).toBe('init')
    expect(frames.at(-1)).toMatchObject({ type: 'end', message: 'server shutting down' })
    expect(await ex.exited).toBe(0)
  }, 30_000)
})
