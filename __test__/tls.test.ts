// HTTPS: one port speaks HTTP/2 and HTTP/1.1 (ALPN), checked with curl, undici and node's
// http2 client; plain routes, bodies, SSE, channels with replay, chunked streams, client
// disconnects, WebSockets (wss) and close() over TLS; certificate errors say which part is wrong; the
// certificate can be swapped while serving; plain HTTP on the TLS port is refused alone.
import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http2 from 'node:http2'
import tls from 'node:tls'
import { promisify } from 'node:util'
import selfsigned from 'selfsigned'
import { Agent, fetch } from 'undici'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import { createApp, RatError, type App, type Channel } from '../ts/index.js'
import { startApp } from './support/app.js'
import { waitFor, within } from './support/wait.js'

const run = promisify(execFile)

interface Pem {
  cert: string
  key: string
}

async function makeCert(passphrase?: string): Promise<Pem> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
    ...(passphrase ? { passphrase } : {}),
  })
  return { cert: pems.cert, key: pems.private }
}

let pem!: Pem
let caFile = ''
let app!: App
let port = 0
let news!: Channel
let aborted = 0

const dir = mkdtempSync(join(tmpdir(), 'rat-tls-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

beforeAll(async () => {
  pem = await makeCert()
  caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, pem.cert)
  app = createApp({ heartbeatMs: 0, onError: () => {} })
  news = app.channel('news', { history: 100 })
  app.get('/hello', () => ({ hello: 'tls' }))
  app.post('/echo', async (req) => await req.text())
  app.sse('/count', async function* () {
    for (let i = 0; i < 3; i++) yield `n${i}`
  })
  app.sse('/news', news)
  app.sse('/forever', (req, stream) => {
    req.signal.addEventListener('abort', () => aborted++)
    stream.send('open')
  })
  app.chunked('/bytes', async function* () {
    for (let i = 0; i < 3; i++) yield `line ${i}\n`
  })
  app.ws('/ws/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) })
  app.ws('/ws/news', news)
  app.ws('/wsz/echo', { message: (ws, data, isBinary) => void ws.send(data, isBinary) }, { compression: true })
  app.ws('/wsz/news', news, { compression: true })
  ;({ port } = await app.listen({ host: '127.0.0.1', port: 0, tls: pem }))
})

afterAll(() => app.close(200))

const url = (path: string) => `https://127.0.0.1:${port}${path}`

async function curl(...args: string[]): Promise<{ body: string; version: string }> {
  const { stdout } = await run('curl', ['-sS', ...args, '-w', '\n%{http_version}'], { timeout: 10_000 }).catch(
    (err: Error & { stdout?: string }) => {
      throw new Error(`curl ${args.join(' ')}: ${err.message}`)
    },
  )
  const at = stdout.lastIndexOf('\n')
  return { body: stdout.slice(0, at), version: stdout.slice(at + 1) }
}

describe('curl', () => {
  test.each([
    ['--http2', '2'],
    ['--http1.1', '1.1'],
  ])('%s: plain routes, bodies, SSE and chunked streams', async (flag, version) => {
    const k = ['--cacert', caFile, flag]
    expect(await curl(...k, url('/hello'))).toEqual({ body: '{"hello":"tls"}', version })
    expect(await curl(...k, '--data-binary', 'posted', url('/echo'))).toEqual({ body: 'posted', version })
    expect(await curl(...k, '-N', url('/count'))).toEqual({ body: 'data: n0\n\ndata: n1\n\ndata: n2\n\n', version })
    expect(await curl(...k, url('/bytes'))).toEqual({ body: 'line 0\nline 1\nline 2\n', version })
  })
})

test('undici with allowH2 verifies the certificate and talks HTTP/2', async () => {
  const dispatcher = new Agent({ allowH2: true, connect: { ca: pem.cert, servername: 'localhost' } })
  try {
    const res = await fetch(url('/hello'), { dispatcher })
    expect(await res.json()).toEqual({ hello: 'tls' })
    const posted = await fetch(url('/echo'), { dispatcher, method: 'POST', body: 'via h2' })
    expect(await posted.text()).toBe('via h2')
  } finally {
    await dispatcher.close()
  }
})

describe('over HTTP/2 (node:http2)', () => {
  const connect = () => http2.connect(`https://localhost:${port}`, { ca: pem.cert })

  function stream(session: http2.ClientHttp2Session, path: string, headers: Record<string, string> = {}) {
    const req = session.request({ ':path': path, ...headers })
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => (text += d))
    const ended = new Promise<void>((resolve, reject) => {
      req.on('end', resolve)
      req.on('error', reject)
    })
    return { req, text: () => text, ended }
  }

  test('a channel streams and resumes from Last-Event-ID on one connection', async () => {
    const session = connect()
    try {
      const a = stream(session, '/news')
      await waitFor('subscribed', () => news.subscribers === 1)
      const first = news.publish('one')
      await waitFor('the first event', () => a.text().includes('data: one'))
      a.req.close()
      await waitFor('unsubscribed', () => news.subscribers === 0)
      news.publish('two')
      const b = stream(session, '/news', { 'last-event-id': first })
      await waitFor('the replay', () => b.text().includes('data: two'))
      expect(b.text()).not.toContain('data: one')
      b.req.close()
    } finally {
      session.close()
    }
  })

  test('twenty streams share one connection', async () => {
    await waitFor('earlier connections to close', () => app.metrics().activeConnections === 0)
    const session = connect()
    try {
      const streams = Array.from({ length: 20 }, () => stream(session, '/news'))
      await waitFor('20 subscribers', () => news.subscribers === 20)
      expect(app.metrics().activeConnections).toBe(1)
      news.publish('to all')
      await waitFor('every stream to get it', () => streams.every((s) => s.text().includes('data: to all')))
      for (const s of streams) s.req.close()
    } finally {
      session.close()
    }
  })

  test('closing a stream aborts its req.signal', async () => {
    const session = connect()
    try {
      const before = aborted
      const s = stream(session, '/forever')
      await waitFor('the stream to open', () => s.text().includes('data: open'))
      s.req.close()
      await waitFor('req.signal abort', () => aborted === before + 1)
    } finally {
      session.close()
    }
  })
})

describe('certificates', () => {
  const listenWith = async (options: { cert: string; key: string; passphrase?: string }) => {
    const a = createApp()
    a.get('/', () => 'ok')
    try {
      await a.listen({ port: 0, tls: options })
    } finally {
      await a.close(0)
    }
  }
  const tlsError = async (options: { cert: string; key: string; passphrase?: string }) => {
    const err = await listenWith(options).then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(RatError)
    expect((err as RatError).code).toBe('ERR_TLS')
    return (err as RatError).message
  }

  test('a bad certificate, a bad key or a key of another certificate reject listen with ERR_TLS saying which', async () => {
    const other = await makeCert()
    expect(await tlsError({ cert: 'not a certificate', key: pem.key })).toMatch(/certificate/)
    expect(await tlsError({ cert: pem.cert, key: 'not a key' })).toMatch(/key/)
    expect(await tlsError({ cert: pem.cert, key: other.key })).toMatch(/does not match/)
  })

  test('an encrypted key needs its passphrase', async () => {
    const enc = await makeCert('s3cret')
    expect(enc.key).toContain('ENCRYPTED PRIVATE KEY')
    expect(await tlsError(enc)).toMatch(/passphrase/)
    expect(await tlsError({ ...enc, passphrase: 'wrong' })).toMatch(/passphrase/)
    await listenWith({ ...enc, passphrase: 's3cret' })
  })

  test('setCertificate swaps the certificate for new connections without a restart', async () => {
    const [a, b] = [await makeCert(), await makeCert()]
    const { app: swapping, port: p } = await startApp((x) => x.get('/', () => 'ok'), { tls: a })
    const presented = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: p, rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
          resolve(s.getPeerX509Certificate()!.fingerprint256)
          s.destroy()
        })
        s.on('error', reject)
      })
    const fingerprint = (pemText: string) => new X509Certificate(pemText).fingerprint256
    expect(await presented()).toBe(fingerprint(a.cert))
    expect(() => swapping.setCertificate({ cert: b.cert, key: a.key })).toThrow(/does not match/)
    expect(await presented()).toBe(fingerprint(a.cert))
    swapping.setCertificate(b)
    expect(await presented()).toBe(fingerprint(b.cert))
  })

  test('setCertificate on an app without TLS throws ERR_TLS', () => {
    const plain = createApp()
    expect(() => plain.setCertificate(pem)).toThrow(RatError)
  })
})

test.each(['/ws', '/wsz'])('wss (%s; /wsz with permessage-deflate): a JS echo route and a channel route, the certificate verified', async (prefix) => {
  const open = (path: string) => {
    const ws = new WebSocket(`wss://localhost:${port}${prefix}${path}`, { ca: pem.cert, perMessageDeflate: { threshold: 0 } })
    const messages: Array<{ data: string; isBinary: boolean }> = []
    ws.on('message', (data: Buffer, isBinary: boolean) => messages.push({ data: data.toString('utf8'), isBinary }))
    const opened = new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    })
    return { ws, messages, opened }
  }
  const echo = open('/echo')
  await within(5000, 'the echo socket to open', echo.opened)
  expect(echo.ws.extensions).toBe(prefix === '/wsz' ? 'permessage-deflate' : '')
  // Sizes across the frame header's three length forms, text and binary, in order.
  const sizes = [0, 125, 126, 65535, 65536]
  for (const n of sizes) echo.ws.send('t'.repeat(n))
  echo.ws.send(Buffer.from('bin'), { binary: true })
  await waitFor('every echo', () => echo.messages.length === sizes.length + 1)
  expect(echo.messages.map((m) => m.data.length)).toEqual([...sizes, 3])
  expect(echo.messages.at(-1)).toEqual({ data: 'bin', isBinary: true })
  const sub = open('/news')
  await within(5000, 'the channel socket to open', sub.opened)
  await waitFor('the subscriber', () => news.subscribers === 1)
  const event = `over wss ${'and compressed '.repeat(10)}${prefix}`
  news.publish(event)
  await waitFor('the published event', () => sub.messages.some((m) => m.data === event))
  const closed = (ws: WebSocket) => new Promise<number>((resolve) => ws.once('close', (code: number) => resolve(code)))
  const codes = [closed(echo.ws), closed(sub.ws)]
  echo.ws.close(1000)
  sub.ws.close(1000)
  expect(await within(5000, 'both closes', Promise.all(codes))).toEqual([1000, 1000])
  await waitFor('no subscriber', () => news.subscribers === 0)
})

test('plain HTTP on the TLS port closes that connection; HTTPS goes on', async () => {
  const err = await fetch(`http://127.0.0.1:${port}/hello`, { signal: AbortSignal.timeout(5000) }).then(
    () => null,
    (e: Error) => e,
  )
  expect(err).toBeInstanceOf(Error)
  expect((await curl('--cacert', caFile, '--http2', url('/hello'))).body).toBe('{"hello":"tls"}')
})

test('close() ends a TLS stream and resolves', async () => {
  const { app: closing, port: p } = await startApp(
    (x) =>
      x.sse('/forever', (_req, s) => {
        s.send('open')
      }),
    { tls: pem },
  )
  const session = http2.connect(`https://localhost:${p}`, { ca: pem.cert })
  session.on('error', () => {})
  const req = session.request({ ':path': '/forever' })
  let text = ''
  req.setEncoding('utf8')
  req.on('data', (d: string) => (text += d))
  const ended = new Promise<void>((resolve) => req.on('close', () => resolve()))
  await waitFor('the stream to open', () => text.includes('data: open'))
  await within(5000, 'close()', closing.close(200))
  await within(5000, 'the stream to end', ended)
  session.close()
})
