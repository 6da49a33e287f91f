// close(): streams end within the grace, finishing ones may finish, the port is released,
// and Node can exit afterwards; while listening, Node stays alive.
import net from 'node:net'
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { createApp, sseEvent } from '../ts/index.js'
import { startApp } from './support/app.js'
import { runFixture } from './support/child.js'
import { RawClient } from './support/raw.js'
import { RawSseClient } from './support/sse.js'
import { sleep, waitFor, within } from './support/wait.js'

const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.on('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.on('error', () => resolve(true))
  })

describe('close()', () => {
  test('resolves, stops accepting and releases the port; metrics and address reflect it', async () => {
    const app = createApp({ heartbeatMs: 0 })
    app.get('/x', () => 'x')
    expect(app.address).toBeNull()
    expect(app.metrics().totalRequests).toBe(0)
    const { port } = await app.listen({ port: 0 })
    expect(app.address).toEqual({ host: '127.0.0.1', port })
    expect(await (await fetch(`http://127.0.0.1:${port}/x`)).text()).toBe('x')
    await within(3000, 'close()', app.close(1000))
    expect(app.address).toBeNull()
    expect(await refused(port)).toBe(true)
  })

  test('ends open streams once the grace has passed, and aborts their signals', async () => {
    let aborted = false
    const { app, port } = await startApp((a) =>
      a.sse('/forever', (req, stream) => {
        req.signal.addEventListener('abort', () => (aborted = true))
        stream.send('open')
      }),
    )
    const client = new RawSseClient(port, '/forever')
    await client.waitForEvents(1)
    const t0 = Date.now()
    await within(5000, 'close()', app.close(300))
    const took = Date.now() - t0
    expect(took).toBeGreaterThanOrEqual(250)
    expect(await within(2000, 'the client to see the end', client.ended)).toBeDefined()
    await waitFor('req.signal abort', () => aborted, { timeoutMs: 1000 })
    client.destroy()
  })

  test('a chunked stream still open after the grace is cut, not completed; SSE ends cleanly', async () => {
    const { app, port } = await startApp((a) => {
      a.chunked('/bytes', (_req, stream) => {
        const t = setInterval(() => stream.write('tick\n'), 50)
        stream.signal.addEventListener('abort', () => clearInterval(t))
      })
      a.sse('/events', (_req, stream) => {
        const t = setInterval(() => stream.send('tick'), 50)
        stream.signal.addEventListener('abort', () => clearInterval(t))
      })
    })
    const bytes = new RawClient(port, '/bytes')
    const sse = new RawSseClient(port, '/events')
    await Promise.all([bytes.head, sse.waitForEvents(1)])
    await within(5000, 'close()', app.close(300))
    expect(await within(2000, 'the byte stream to end', bytes.ended)).toBe('closed')
    expect(bytes.bodyBytes).toBeGreaterThan(0)
    expect(await within(2000, 'the SSE stream to end', sse.ended)).toBe('complete')
    bytes.destroy()
    sse.destroy()
  })

  test('lets a stream that finishes within the grace finish', async () => {
    const { app, port } = await startApp((a) =>
      a.sse('/short', async function* () {
        for (let i = 0; i < 5; i++) {
          await sleep(50)
          yield sseEvent(`e${i}`, { id: i })
        }
      }),
    )
    const client = new RawSseClient(port, '/short')
    await client.waitForEvents(1)
    const t0 = Date.now()
    await within(5000, 'close()', app.close(3000))
    expect(Date.now() - t0).toBeLessThan(2500)
    expect(await client.ended).toBe('complete')
    expect(client.events.map((e) => e.data)).toEqual(['e0', 'e1', 'e2', 'e3', 'e4'])
  })

  test('does not wait for idle keep-alive connections', async () => {
    const { app, url } = await startApp((a) => a.get('/x', () => 'x'))
    expect(await (await fetch(url('/x'))).text()).toBe('x')
    const t0 = Date.now()
    await within(3000, 'close()', app.close(5000))
    expect(Date.now() - t0).toBeLessThan(2000)
  })

  test('a second close() is harmless', async () => {
    const { app } = await startApp((a) => a.get('/x', () => 'x'))
    await app.close(100)
    await within(2000, 'second close()', app.close(100))
  })
})

describe('process lifetime', () => {
  test.each([['plain'], ['stream']])(
    'after close() Node exits by itself with code 0 (%s)',
    async (mode) => {
      const child = runFixture('close-exits.mts', [mode])
      const closedAt = await child.printed('closed')
      const code = await within(5000, 'the child to exit after close()', child.exited)
      expect(code).toBe(0)
      expect(Date.now() - closedAt).toBeLessThan(5000)
    },
    25_000,
  )

  test('apps in worker threads: the first to load the addon is a worker that exits; workers after it listen, answer and close, one is terminated while listening; the process lives on', async () => {
    const child = runFixture('workers.mts')
    await child.printed('ok', 20_000)
    expect(await within(5000, 'the child to exit', child.exited)).toBe(0)
  }, 30_000)

  test('a listening app keeps Node alive', async () => {
    const child = runFixture('listen-stays.mts')
    await child.printed('listening')
    const port = Number(/listening (\d+)/.exec(child.stdout())![1])
    await sleep(1000)
    expect(child.proc.exitCode).toBeNull()
    // Still serving, too.
    expect(await (await fetch(`http://127.0.0.1:${port}/hello`)).text()).toBe('hello')
    child.proc.kill('SIGTERM')
    expect(await within(5000, 'the child to die', child.exited)).toBe('SIGTERM')
  }, 25_000)
})

describe('clients that leave before an async handler answers', () => {
  test.each(['GET', 'POST'])('%s: req.signal aborts and the connections are counted out and closed', async (method) => {
    const N = 50
    let started = 0
    let aborted = 0
    const { app, port } = await startApp((a) =>
      a.route(method, '/pending', (req) => {
        started++
        return new Promise((resolve) => {
          req.signal.addEventListener('abort', () => {
            aborted++
            resolve('too late')
          })
        })
      }),
    )
    const before = app.metrics().activeConnections
    const sockets = Array.from({ length: N }, () => {
      const s = net.connect({ host: '127.0.0.1', port })
      s.on('error', () => {})
      const body = method === 'POST' ? 'x' : ''
      s.write(`${method} /pending HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
      return s
    })
    await waitFor('every handler to run', () => started === N, { timeoutMs: 5000 })
    expect(app.metrics().activeConnections).toBe(before + N)
    for (const s of sockets) s.destroy()
    await waitFor(`${N} signals to abort (have ${aborted})`, () => aborted === N, { timeoutMs: 5000 })
    await waitFor('the connections to be counted out', () => app.metrics().activeConnections === before, { timeoutMs: 5000 })
    // The server still answers.
    const ok = await fetch(`http://127.0.0.1:${port}/pending`, { method, body: method === 'POST' ? 'y' : undefined, signal: AbortSignal.timeout(300) }).catch((e: Error) => e.name)
    expect(ok).toBe('TimeoutError')
    await waitFor('the last one aborted too', () => aborted === N + 1, { timeoutMs: 5000 })
  })
})
