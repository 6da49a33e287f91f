// How long a request can be read. The requests of one dispatch call are read and answered
// through the engine's batch while the call runs; a handler that returns a promise, and
// every stream, keeps its request; what no handler kept is released when the call
// returns, and reading it afterwards is a clear `ERR_REQUEST_RELEASED`, not a crash or a
// stale value.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fetch } from 'undici'
import { afterAll, expect, test } from 'vitest'
import { RatError, type RatRequest } from '../ts/index.js'
import { startApp } from './support/app.js'
import { sleep, within } from './support/wait.js'

const dir = mkdtempSync(join(tmpdir(), 'rat-lifetime-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let stashed: RatRequest<unknown> | null = null
let batchmate: RatRequest<unknown> | null = null
// Which dispatch call ran a handler: no microtask runs between the handlers of one call.
let turn = 0
let turns = 0
const inTurn = () => {
  if (turn === 0) {
    turn = ++turns
    queueMicrotask(() => (turn = 0))
  }
  return turn
}

const { url, port } = await startApp((app) => {
  app.get('/stash', (req) => {
    stashed = req
    return `hello ${req.header('x-a')}`
  })
  app.post('/late', async (req) => {
    await sleep(20)
    return {
      method: req.method,
      path: req.path,
      query: req.query,
      header: req.header('x-a'),
      ip: req.remoteAddress,
      body: req.body.toString(),
    }
  })
  // Not an async function: a plain function that returns a promise keeps its request too.
  app.get('/promise/<int:n>', (req) => new Promise((resolve) => setTimeout(() => resolve({ n: req.params.n, q: req.query.q }), 10)))
  // Holds the JS thread until the client has sent every request, so that they arrive in
  // one dispatch call.
  app.get('/block', () => {
    const until = Date.now() + 10_000
    while (!existsSync(join(dir, 'sent')) && Date.now() < until);
    const settle = Date.now() + 100
    while (Date.now() < settle);
    return 'unblocked'
  })
  app.get('/sync/<int:n>', (req) => ({ kind: 'sync', n: req.params.n, h: req.header('x-n'), turn: inTurn() }))
  app.get('/async/<int:n>', async (req) => {
    const t = inTurn()
    await sleep(5)
    return { kind: 'async', n: req.params.n, h: req.header('x-n'), turn: t }
  })
  // A synchronous handler that leaves its request behind, for one in the same dispatch
  // call as an async handler.
  app.get('/mate/sync/<int:n>', (req) => {
    batchmate = req
    return { kind: 'sync', n: req.params.n, h: req.header('x-n'), turn: inTurn() }
  })
  app.chunked('/chunk/<int:n>', async function* (req) {
    const t = inTurn()
    yield JSON.stringify({ kind: 'chunk', n: req.params.n, h: req.header('x-n'), turn: t })
  })
})

test('a synchronous handler’s request is released when it returns: later reads throw ERR_REQUEST_RELEASED, what it read stays', async () => {
  const res = await fetch(url('/stash?x=1'), { headers: { 'x-a': 'one' } })
  expect(await res.text()).toBe('hello one')
  const req = stashed!
  // Read (and so cached) while the handler ran.
  expect(req.header('x-a')).toBe('one')
  expect(req.headers['x-a']).toBe('one')
  for (const read of [() => req.method, () => req.path, () => req.query, () => req.body, () => req.remoteAddress, () => req.params]) {
    let thrown: unknown
    try {
      read()
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(RatError)
    expect((thrown as RatError).code).toBe('ERR_REQUEST_RELEASED')
    expect((thrown as RatError).message).toMatch(/return a promise/)
  }
  // The server goes on serving.
  const again = await fetch(url('/stash'), { headers: { 'x-a': 'two' } })
  expect(await again.text()).toBe('hello two')
})

test('an async handler reads its request after awaiting: method, path, query, headers, address, body', async () => {
  const res = await fetch(url('/late?a=1&a=2&b=x'), { method: 'POST', headers: { 'x-a': 'late' }, body: 'the body' })
  expect(res.status).toBe(200)
  expect(await res.json()).toEqual({
    method: 'POST',
    path: '/late',
    query: { a: ['1', '2'], b: 'x' },
    header: 'late',
    ip: '127.0.0.1',
    body: 'the body',
  })
})

test('a plain function returning a promise keeps its request', async () => {
  const res = await fetch(url('/promise/42?q=z'))
  expect(await res.json()).toEqual({ n: 42, q: 'z' })
})

// A client in its own process (this one's JS thread is held by /block): one connection
// per request, /block first, then the others in order, then the flag file.
const CLIENT = `
const net = require('node:net'), fs = require('node:fs')
const [port, flag, ...paths] = process.argv.slice(1)
const send = (path, n) => new Promise((resolve) => {
  const s = net.connect(Number(port), '127.0.0.1', () => {
    s.write('GET ' + path + ' HTTP/1.1\\r\\nhost: x\\r\\nx-n: h' + n + '\\r\\nconnection: close\\r\\n\\r\\n')
    resolve([done])
  })
  let out = ''
  s.setEncoding('utf8')
  s.on('data', (d) => (out += d))
  const done = new Promise((r) => s.on('close', () => r(out)))
})
;(async () => {
  const [block] = await send('/block', -1)
  await new Promise((r) => setTimeout(r, 100))
  const rest = []
  for (let n = 0; n < paths.length; n++) {
    rest.push((await send(paths[n], n))[0])
    await new Promise((r) => setTimeout(r, 2))
  }
  fs.writeFileSync(flag, '')
  const all = await Promise.all([block, ...rest])
  process.stdout.write(JSON.stringify(all))
})()
`

test('one dispatch call mixing handlers that answer at once, promises and streams: each answers its own request', async () => {
  const kinds = ['sync', 'chunk', 'async']
  const paths = Array.from({ length: 12 }, (_, n) => `/${kinds[n % 3]}/${n}`)
  const child = spawn(process.execPath, ['-e', CLIENT, String(port), join(dir, 'sent'), ...paths], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await within(20_000, 'the client', new Promise((resolve) => child.on('close', resolve)))
  const [block, ...rest] = JSON.parse(out) as string[]
  expect(block).toMatch(/^HTTP\/1\.1 200[\s\S]*unblocked$/)
  const bodies = rest.map((raw, n) => {
    expect(raw, paths[n]).toMatch(/^HTTP\/1\.1 200/)
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4)
    // The chunked route's body is one chunk: size line, data, terminator.
    const json = kinds[n % 3] === 'chunk' ? body.split('\r\n')[1] : body
    return JSON.parse(json) as { kind: string; n: number; h: string; turn: number }
  })
  bodies.forEach((b, n) => expect(b, paths[n]).toMatchObject({ kind: kinds[n % 3], n, h: `h${n}` }))
  // They did share one dispatch call (else this test would not test the mix).
  expect(new Set(bodies.map((b) => b.turn)).size).toBe(1)
})

test('a request kept by an async handler is kept alone: a synchronous handler’s request of the same dispatch call is still released', async () => {
  batchmate = null
  rmSync(join(dir, 'sent'), { force: true })
  const paths = ['/async/0', '/mate/sync/1', '/async/2']
  const child = spawn(process.execPath, ['-e', CLIENT, String(port), join(dir, 'sent'), ...paths], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await within(20_000, 'the client', new Promise((resolve) => child.on('close', resolve)))
  const [, ...rest] = JSON.parse(out) as string[]
  const bodies = rest.map((raw) => JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { kind: string; n: number; turn: number })
  expect(bodies.map((b) => [b.kind, b.n])).toEqual([
    ['async', 0],
    ['sync', 1],
    ['async', 2],
  ])
  // One dispatch call, so the async handlers kept their requests while the synchronous
  // one's was in the same batch.
  expect(new Set(bodies.map((b) => b.turn)).size).toBe(1)
  const req = batchmate as RatRequest<unknown> | null
  expect(req).not.toBeNull()
  // Fields it did not read are gone with it (its body included), not held by its batch mates.
  for (const read of [() => req!.path, () => req!.body, () => req!.method]) {
    let thrown: unknown
    try {
      read()
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(RatError)
    expect((thrown as RatError).code).toBe('ERR_REQUEST_RELEASED')
  }
})
