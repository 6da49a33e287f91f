// WebSocket routes with the `ws` npm client: echo at the length boundaries in order,
// ping/pong, close codes both ways, a throwing handler (1011, logged, the server goes on),
// hooks and params before the upgrade, channels over ws, backpressure (send false, drain).
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { describe, expect, onTestFinished, test } from 'vitest'
import WebSocket from 'ws'
import { createApp, HttpError, RatError, type Channel, type RatWebSocket } from '../ts/index.js'
import { startApp } from './support/app.js'
import { deferred, waitFor, within } from './support/wait.js'

const require = createRequire(import.meta.url)

/**
 * A `ws` client in a worker thread: sends 64 KiB messages, each starting with its number,
 * until 8 MiB wait in it (the kernel's buffers are full: the server stopped reading) or
 * 2,000 (125 MiB) are sent, which a server reading without bound takes in with the client
 * never waiting; posts `{ sent, backpressure }`, then sends what it holds and waits.
 */
const FLOOD_CLIENT = `
const { parentPort, workerData } = require('node:worker_threads')
const WebSocket = require(workerData.ws)
const ws = new WebSocket(workerData.url)
ws.on('open', () => {
  let sent = 0
  const pump = () => {
    while (ws.bufferedAmount < 8 << 20 && sent < 2000) {
      const m = Buffer.alloc(64 << 10)
      m.writeUInt32BE(sent, 0)
      ws.send(m)
      sent++
      if (sent % 16 === 0) break
    }
    if (ws.bufferedAmount >= 8 << 20) parentPort.postMessage({ sent, backpressure: true })
    else if (sent >= 2000) parentPort.postMessage({ sent, backpressure: false })
    else setImmediate(pump)
  }
  pump()
})
`

const logged: Array<{ obj: unknown; msg: string }> = []
const logger = {
  info: () => {},
  warn: () => {},
  error: (obj: unknown, msg: string) => void logged.push({ obj, msg }),
}

const closes: Array<[number, string]> = []
const drains: string[] = []
let feed!: Channel
let zfeed!: Channel
const started = await startApp(
  (app) => {
    feed = app.channel('ws-feed')
    app.use('/private', (req) => {
      if (req.header('authorization') !== 'Bearer good') throw new HttpError(401, 'log in first')
    })
    app.ws('/echo', {
      message: (ws, data, isBinary) => void ws.send(data, isBinary),
    })
    app.ws('/z/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { compression: true })
    app.ws('/z/context', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { compression: { clientContextTakeover: true } })
    app.ws('/proto/open', { open: (ws) => void ws.send(`chose ${ws.protocol}`) }, { protocols: ['graphql-transport-ws', 'chat'] })
    app.ws('/proto/message', { message: (ws) => void ws.send(`chose ${ws.protocol}`) }, { protocols: ['chat'] })
    zfeed = app.channel('ws-zfeed')
    app.ws('/z/feed', zfeed, { compression: true })
    app.ws('/rooms/:room', {
      open: (ws, req) => {
        ws.data = req.params.room
        ws.send(`joined ${req.params.room} from ${ws.remoteAddress}`)
      },
      message: (ws: RatWebSocket<unknown>, data) => {
        if (data === 'close please') ws.close(4001, 'as you wish')
        else if (data === 'throw') throw new Error('boom in a handler')
        else if (data === 'reject') return Promise.reject(new Error('boom in a promise'))
        else ws.send(`${String(ws.data)}: ${String(data)}`)
      },
      close: (_ws, code, reason) => void closes.push([code, reason]),
    })
    app.ws('/private/room', { open: (ws) => void ws.send('welcome') })
    app.ws('/private/echo', { message: (ws, data) => void ws.send(`private: ${String(data)}`) })
    app.use('/slow', async (req) => {
      await new Promise((resolve) => setTimeout(resolve, 20))
      req.locals.user = 'ada'
    })
    app.ws('/slow/room', { open: (ws, req) => void ws.send(`welcome ${String(req.locals.user)} to ${req.path}`) })
    app.ws('/feed', feed)
    app.ws('/subscribe', { open: (ws) => ws.subscribe(feed), message: (ws) => ws.unsubscribe(feed) })
    app.ws(
      '/burst',
      {
        open: (ws) => {
          const first = ws.send(Buffer.alloc(64 << 10, 1))
          ws.send(`first send returned ${first}`)
        },
        drain: (ws) => {
          drains.push('drain')
          ws.send('drained')
        },
      },
      { highWaterMark: 16 << 10 },
    )
  },
  { logger },
)

/** Opens a client and resolves once it is open; `messages` collects what arrives. */
async function open(path: string, headers: Record<string, string> = {}, options: WebSocket.ClientOptions = {}, protocols: string[] = []) {
  const ws = new WebSocket(`ws://127.0.0.1:${started.port}${path}`, protocols, { headers, ...options })
  const messages: Array<string | Buffer> = []
  const waiters: Array<() => void> = []
  let extensions: string | undefined
  ws.once('upgrade', (res) => void (extensions = res.headers['sec-websocket-extensions'] as string | undefined))
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    messages.push(isBinary ? data : data.toString('utf8'))
    waiters.splice(0).forEach((w) => w())
  })
  const closed = new Promise<[number, string]>((resolve) => ws.on('close', (code, reason) => resolve([code, reason.toString()])))
  await within(5000, `open ${path}`, new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  }))
  const next = async (): Promise<string | Buffer> => {
    await within(5000, `a message on ${path}`, waitFor(`a message on ${path}`, () => messages.length > 0))
    return messages.shift()!
  }
  return { ws, messages, next, closed, extensions }
}

describe('WebSocket routes', () => {
  test('echo of text and binary at 0, 125, 126, 65535, 65536 and 1 MiB, in order', async () => {
    const c = await open('/echo')
    const sizes = [0, 125, 126, 65535, 65536, 1 << 20]
    for (const n of sizes) {
      c.ws.send('x'.repeat(n))
      c.ws.send(Buffer.alloc(n, n % 251))
    }
    for (const n of sizes) {
      const t = await c.next()
      expect(typeof t).toBe('string')
      expect((t as string).length).toBe(n)
      expect(t).toBe('x'.repeat(n))
      const b = await c.next()
      expect(Buffer.isBuffer(b)).toBe(true)
      expect((b as Buffer).equals(Buffer.alloc(n, n % 251))).toBe(true)
    }
    c.ws.close()
  })

  test('permessage-deflate: echo at the length boundaries, compressed both ways', async () => {
    // The client compresses every message it sends (threshold 0).
    const c = await open('/z/echo', {}, { perMessageDeflate: { threshold: 0 } })
    expect(c.extensions).toBe('permessage-deflate; server_no_context_takeover; client_no_context_takeover')
    const socket = (c.ws as unknown as { _socket: import('node:net').Socket })._socket
    const sizes = [0, 125, 126, 65535, 65536, 1 << 20]
    let sent = 0
    for (const n of sizes) {
      c.ws.send('x'.repeat(n))
      c.ws.send(Buffer.alloc(n, n % 251), { binary: true })
      sent += 2 * n
    }
    for (const n of sizes) {
      expect(await c.next()).toBe('x'.repeat(n))
      const b = await c.next()
      expect(Buffer.isBuffer(b) && b.equals(Buffer.alloc(n, n % 251))).toBe(true)
    }
    // 2.5 MB of repeated bytes came back in a few KB: the server compressed them.
    expect(socket.bytesRead).toBeLessThan(sent / 100)
    c.ws.close()
    // Without the client's offer, the same route serves plain frames.
    const plain = await open('/z/echo', {}, { perMessageDeflate: false })
    expect(plain.ws.extensions).toBe('')
    plain.ws.send('y'.repeat(1000))
    expect(await plain.next()).toBe('y'.repeat(1000))
    plain.ws.close()
  })

  test('permessage-deflate: a route may let clients keep their compression context', async () => {
    const c = await open('/z/context', {}, { perMessageDeflate: { threshold: 0 } })
    expect(c.extensions).toBe('permessage-deflate; server_no_context_takeover')
    const socket = (c.ws as unknown as { _socket: import('node:net').Socket })._socket
    const line = JSON.stringify({ user: 'ada', text: 'the same few words each time', n: 0 })
    for (let i = 0; i < 50; i++) c.ws.send(line)
    for (let i = 0; i < 50; i++) expect(await c.next()).toBe(line)
    // Each message after the first refers back to the ones before: a few bytes on the wire.
    expect(socket.bytesWritten).toBeLessThan(50 * 20)
    c.ws.close()
  })

  test("permessage-deflate: a channel's events go out compressed to sockets that asked", async () => {
    const z = await open('/z/feed')
    const plain = await open('/z/feed', {}, { perMessageDeflate: false })
    await waitFor('2 subscribers', () => zfeed.subscribers === 2)
    const row = { rows: Array.from({ length: 200 }, (_, i) => ({ id: i % 3, name: 'row' })) }
    for (let i = 0; i < 3; i++) zfeed.publish(row)
    const socket = (c: typeof z) => (c.ws as unknown as { _socket: import('node:net').Socket })._socket
    for (const c of [z, plain]) {
      for (let i = 0; i < 3; i++) expect(JSON.parse((await c.next()) as string)).toEqual(row)
    }
    const size = JSON.stringify(row).length
    expect(socket(plain).bytesRead).toBeGreaterThan(3 * size)
    expect(socket(z).bytesRead).toBeLessThan(size)
    z.ws.close()
    plain.ws.close()
  })

  test('subprotocols: the first the client offers that the route speaks is chosen, in open and later', async () => {
    const a = await open('/proto/open', {}, {}, ['chat', 'graphql-transport-ws'])
    expect(a.ws.protocol).toBe('chat')
    expect(await a.next()).toBe('chose chat')
    const b = await open('/proto/open', {}, {}, ['mqtt', 'graphql-transport-ws'])
    expect(b.ws.protocol).toBe('graphql-transport-ws')
    expect(await b.next()).toBe('chose graphql-transport-ws')
    const c = await open('/proto/message', {}, {}, ['chat'])
    expect(c.ws.protocol).toBe('chat')
    c.ws.send('which?')
    expect(await c.next()).toBe('chose chat')
    // Offering nothing the route speaks: none is answered (the \`ws\` client accepts that).
    const d = await open('/proto/message')
    expect(d.ws.protocol).toBe('')
    d.ws.send('which?')
    expect(await d.next()).toBe('chose ')
    for (const x of [a, b, c, d]) x.ws.close()
    expect(() => createApp().ws('/p', {}, { protocols: ['has space'] })).toThrow(/protocols must be an array of tokens/)
    expect(() => createApp().ws('/p', {}, { protocols: 'chat' as unknown as string[] })).toThrow(/protocols must be an array of tokens/)
  })

  test('compression takes a boolean', () => {
    expect(() => createApp().ws('/z/bad', {}, { compression: 'yes' as unknown as boolean })).toThrow(/compression must be true, false or/)
    expect(() => createApp().ws('/z/bad', {}, { compression: { clientContextTakeover: 1 as unknown as boolean } })).toThrow(/compression must be true, false or/)
  })

  test('a ping is answered with a pong carrying its payload', async () => {
    const c = await open('/echo')
    const pong = new Promise<Buffer>((resolve) => c.ws.once('pong', resolve))
    c.ws.ping(Buffer.from('are you there'))
    expect((await within(5000, 'pong', pong)).toString()).toBe('are you there')
    c.ws.close()
  })

  test('path params and the remote address reach open; ws.data keeps state', async () => {
    const c = await open('/rooms/kitchen')
    expect(await c.next()).toBe('joined kitchen from 127.0.0.1')
    c.ws.send('hello')
    expect(await c.next()).toBe('kitchen: hello')
    c.ws.close()
  })

  test('close codes travel both ways', async () => {
    const a = await open('/rooms/a')
    await a.next()
    a.ws.close(4000, 'bye')
    expect(await within(5000, 'close', a.closed)).toEqual([4000, 'bye'])
    await waitFor('the close handler', () => closes.some(([c]) => c === 4000))
    expect(closes).toContainEqual([4000, 'bye'])

    const b = await open('/rooms/b')
    await b.next()
    b.ws.send('close please')
    expect(await within(5000, 'close', b.closed)).toEqual([4001, 'as you wish'])
    await waitFor('the close handler', () => closes.some(([c]) => c === 4001))
  })

  test('an invalid close code is refused with a clear error', async () => {
    const got = deferred<unknown>()
    const s = await startApp((app) =>
      app.ws('/bad-close', {
        open: (ws) => {
          try {
            ws.close(1005)
          } catch (err) {
            got.resolve(err)
          }
        },
      }),
    )
    const c = new WebSocket(`ws://127.0.0.1:${s.port}/bad-close`)
    c.on('error', () => {}) // terminated before or after the handshake
    const err = await within(5000, 'the error', got.promise)
    expect(err).toBeInstanceOf(RatError)
    expect((err as RatError).code).toBe('ERR_INVALID_ARGUMENT')
    c.terminate()
  })

  test('a handler that throws or rejects closes its socket with 1011 and is logged; the server goes on', async () => {
    for (const what of ['throw', 'reject']) {
      const c = await open('/rooms/x')
      await c.next()
      c.ws.send(what)
      const [code] = await within(5000, 'close', c.closed)
      expect(code).toBe(1011)
      await waitFor('the log line', () => logged.some((l) => l.msg === 'WebSocket handler failed' && String((l.obj as { err: Error }).err.message).includes(what === 'throw' ? 'boom in a handler' : 'boom in a promise')))
    }
    const ok = await open('/echo')
    ok.ws.send('still serving')
    expect(await ok.next()).toBe('still serving')
    ok.ws.close()
  })

  test('hooks run before the upgrade: a refusal is an HTTP answer', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${started.port}/private/room`)
    ws.on('error', () => {}) // the refused handshake, terminated below
    const status = await within(5000, 'the refusal', new Promise<number>((resolve) => ws.on('unexpected-response', (_req, res) => resolve(res.statusCode!))))
    expect(status).toBe(401)
    ws.terminate()
    const c = await open('/private/room', { authorization: 'Bearer good' })
    expect(await c.next()).toBe('welcome')
    c.ws.close()
  })

  test('a route with no open handler still runs its hooks before the upgrade', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${started.port}/private/echo`)
    ws.on('error', () => {})
    const status = await within(5000, 'the refusal', new Promise<number>((resolve) => ws.on('unexpected-response', (_req, res) => resolve(res.statusCode!))))
    expect(status).toBe(401)
    ws.terminate()
    const c = await open('/private/echo', { authorization: 'Bearer good' })
    c.ws.send('hello')
    expect(await c.next()).toBe('private: hello')
    c.ws.close()
  })

  test('an async hook: the upgrade waits for it, and open still reads the request', async () => {
    const c = await open('/slow/room')
    expect(await c.next()).toBe('welcome ada to /slow/room')
    c.ws.close()
  })

  test("a channel's events reach its ws subscribers as text frames, in order", async () => {
    const clients = await Promise.all([open('/feed'), open('/feed'), open('/subscribe')])
    await waitFor('3 subscribers', () => feed.subscribers === 3)
    for (let i = 0; i < 5; i++) feed.publish({ n: i }, { event: 'tick' })
    for (const c of clients) {
      for (let i = 0; i < 5; i++) expect(JSON.parse((await c.next()) as string)).toEqual({ n: i })
    }
    // ws.unsubscribe from a handler.
    clients[2].ws.send('stop')
    await waitFor('2 subscribers', () => feed.subscribers === 2)
    for (const c of clients) c.ws.close()
    await waitFor('no subscribers', () => feed.subscribers === 0)
  })

  test('backpressure: send returns false past the high-water mark and drain fires when the queue empties', async () => {
    const c = await open('/burst')
    const big = await c.next()
    expect((big as Buffer).length).toBe(64 << 10)
    expect(await c.next()).toBe('first send returned false')
    expect(await c.next()).toBe('drained')
    expect(drains).toEqual(['drain'])
    c.ws.close()
  })

  test('routes with no open handler: each socket reaches its own route\'s handlers, with one ws object from its first event to its close', async () => {
    const seen: string[] = []
    const objects = new Set<RatWebSocket<unknown>>()
    const s = await startApp((app) => {
      app.ws('/talk', {
        message: (ws, data) => {
          objects.add(ws)
          ws.data = `talk:${String(data)}`
          ws.send(String(ws.data))
        },
        close: (ws, code, reason) => {
          objects.add(ws)
          seen.push(`${String(ws.data)} closed ${code} ${reason}`)
        },
      })
      app.ws('/quiet', { close: (ws, code, reason) => void seen.push(`quiet ${String(ws.data)} closed ${code} ${reason}`) })
    })
    const connect = (path: string) => {
      const ws = new WebSocket(`ws://127.0.0.1:${s.port}${path}`)
      const got: string[] = []
      ws.on('message', (d: Buffer) => void got.push(d.toString('utf8')))
      const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()))
      const opened = new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve())
        ws.once('error', reject)
      })
      return { ws, got, closed, opened }
    }
    const talk = connect('/talk')
    const quiet = connect('/quiet')
    await within(5000, 'both open', Promise.all([talk.opened, quiet.opened]))
    talk.ws.send('hi')
    await waitFor('the echo', () => talk.got.length === 1)
    expect(talk.got).toEqual(['talk:hi'])
    quiet.ws.close(4002, 'quiet bye')
    talk.ws.close(4003, 'talk bye')
    await within(5000, 'both closed', Promise.all([talk.closed, quiet.closed]))
    await waitFor('both close handlers', () => seen.length === 2)
    expect(seen.sort()).toEqual(['quiet undefined closed 4002 quiet bye', 'talk:hi closed 4003 talk bye'])
    expect(objects.size).toBe(1)
  })

  test('a client that sends faster than its handler runs is slowed by TCP (the server stops reading past ~1 MiB of unhandled messages), and every message arrives in order', async () => {
    let handled = 0
    let outOfOrder = 0
    const s = await startApp((app) => {
      app.ws('/slow-handler', {
        message: (_ws, data) => {
          if ((data as Buffer).readUInt32BE(0) !== handled) outOfOrder++
          handled++
          const until = Date.now() + 3
          while (Date.now() < until) {}
        },
      })
    })
    // The client runs in a worker thread, so that it sends while the handler runs.
    const client = new Worker(FLOOD_CLIENT, { eval: true, workerData: { url: `ws://127.0.0.1:${s.port}/slow-handler`, ws: require.resolve('ws') } })
    onTestFinished(() => void client.terminate())
    const { sent, backpressure } = await within(20_000, 'the client to fill up or send everything', new Promise<{ sent: number; backpressure: boolean }>((resolve, reject) => {
      client.once('message', resolve)
      client.once('error', reject)
    }))
    expect(backpressure, `the client sent all ${sent} messages without waiting`).toBe(true)
    await waitFor('every message handled', () => handled === sent, { timeoutMs: 30_000 })
    expect(outOfOrder).toBe(0)
  }, 60_000)
})
