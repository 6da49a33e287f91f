// Chunked and NDJSON routes through undici fetch: chunks arrive as they are produced, and
// the stream helpers send the right content type and bytes.
import { fetch } from 'undici'
import { describe, expect, test } from 'vitest'
import { binaryStream, chunkedResponse, jsonStream, textStream } from '../ts/index.js'
import { startApp } from './support/app.js'
import { sleep } from './support/wait.js'

const GAP_MS = 150

const { url } = await startApp((app) => {
  app.chunked('/slow', async function* () {
    for (let i = 0; i < 5; i++) {
      if (i > 0) await sleep(GAP_MS)
      yield `chunk ${i}\n`
    }
  })
  app.ndjson('/rows', async function* () {
    for (let i = 0; i < 4; i++) {
      if (i > 0) await sleep(GAP_MS)
      yield { id: i, name: `row ${i}` }
    }
  })
  app.chunked('/bytes', async function* () {
    yield 'text, '
    yield Buffer.from([0x00, 0xff, 0x10])
    yield new Uint8Array([0x41])
  })
  app.chunked('/writer', (_req, stream) => {
    stream.status(201).header('x-report', 'yes')
    stream.write('part one; ')
    setTimeout(() => {
      stream.write('part two')
      stream.end()
    }, 50)
  })
  // A synchronous burst of 4 MiB without waiting: bounded by the hard limit (8 MiB by
  // default), not cut, when the client reads.
  app.chunked('/burst', (_req, stream) => {
    const block = Buffer.alloc(64 * 1024, 0x61)
    for (let i = 0; i < 64; i++) stream.write(block)
    stream.end()
  }, { contentType: 'application/octet-stream' })
  app.chunked('/csv', async function* () {
    yield 'a,b\n'
  }, { contentType: 'text/csv' })
  app.chunked('/builder', () => chunkedResponse().addChunk('first|').addDelay(300).addChunk('second|').addChunk(Buffer.from('third')))
  app.chunked('/paced', () => chunkedResponse().withDelay(100).addChunk('1').addChunk('2').addChunk('3'))
  app.chunked('/json-stream', () => jsonStream([{ a: 1 }, 'two', [3]]))
  app.chunked('/json-stream-async', () =>
    jsonStream(
      (async function* () {
        yield { n: 1 }
        await sleep(10)
        yield { n: 2 }
      })(),
    ),
  )
  app.chunked('/text-stream', () => textStream(['line one', 'line two']))
  app.chunked('/binary-stream', () => binaryStream([Buffer.from([1, 2, 3]), new Uint8Array([250, 251])]))
})

/** Reads a response body, noting when each piece arrived (ms since the request). */
async function timedChunks(path: string) {
  const t0 = Date.now()
  const res = await fetch(url(path))
  const pieces: Array<{ at: number; text: string }> = []
  const decoder = new TextDecoder()
  for await (const piece of res.body!) {
    pieces.push({ at: Date.now() - t0, text: decoder.decode(piece as Uint8Array, { stream: true }) })
  }
  return { res, pieces, text: pieces.map((p) => p.text).join('') }
}

describe('real streaming', () => {
  test('chunks arrive as the generator produces them, not all at the end', async () => {
    const { res, pieces, text } = await timedChunks('/slow')
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(res.headers.get('transfer-encoding')).toBe('chunked')
    expect(text).toBe('chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n')
    // 4 gaps of 150 ms: the first piece must come well before the last.
    const first = pieces.find((p) => p.text.includes('chunk 0'))!
    const last = pieces.find((p) => p.text.includes('chunk 4'))!
    expect(last.at - first.at).toBeGreaterThan(GAP_MS * 2)
    expect(pieces.length).toBeGreaterThanOrEqual(3)
  })

  test('NDJSON rows arrive one by one with the NDJSON content type', async () => {
    const { res, pieces, text } = await timedChunks('/rows')
    expect(res.headers.get('content-type')).toBe('application/x-ndjson')
    const rows = text.trimEnd().split('\n').map((l) => JSON.parse(l))
    expect(rows).toEqual([0, 1, 2, 3].map((i) => ({ id: i, name: `row ${i}` })))
    expect(pieces.at(-1)!.at - pieces[0].at).toBeGreaterThan(GAP_MS)
  })
})

describe('chunked routes', () => {
  test('strings and bytes are written as they are', async () => {
    const res = await fetch(url('/bytes'))
    const body = Buffer.from(await res.arrayBuffer())
    expect(body).toEqual(Buffer.concat([Buffer.from('text, '), Buffer.from([0x00, 0xff, 0x10, 0x41])]))
  })

  test('a (req, stream) handler sets status and headers and writes until end()', async () => {
    const res = await fetch(url('/writer'))
    expect(res.status).toBe(201)
    expect(res.headers.get('x-report')).toBe('yes')
    expect(await res.text()).toBe('part one; part two')
  })

  test('the route content type option is used', async () => {
    const res = await fetch(url('/csv'))
    expect(res.headers.get('content-type')).toBe('text/csv')
    expect(await res.text()).toBe('a,b\n')
  })
})

describe('stream helpers', () => {
  test('chunkedResponse().addChunk().addDelay() streams with the delay between chunks', async () => {
    const { res, pieces, text } = await timedChunks('/builder')
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(text).toBe('first|second|third')
    const first = pieces.find((p) => p.text.includes('first'))!
    const second = pieces.find((p) => p.text.includes('second'))!
    expect(second.at - first.at).toBeGreaterThan(150)
  })

  test('chunkedResponse().withDelay() paces every chunk after the first', async () => {
    const { text, pieces } = await timedChunks('/paced')
    expect(text).toBe('123')
    expect(pieces.at(-1)!.at - pieces[0].at).toBeGreaterThan(100)
  })

  test('jsonStream sends NDJSON from sync and async iterables', async () => {
    const res = await fetch(url('/json-stream'))
    expect(res.headers.get('content-type')).toBe('application/x-ndjson')
    expect(await res.text()).toBe('{"a":1}\n"two"\n[3]\n')
    const res2 = await fetch(url('/json-stream-async'))
    expect(res2.headers.get('content-type')).toBe('application/x-ndjson')
    expect(await res2.text()).toBe('{"n":1}\n{"n":2}\n')
  })

  test('textStream sends lines as text/plain', async () => {
    const res = await fetch(url('/text-stream'))
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(await res.text()).toBe('line one\nline two\n')
  })

  test('binaryStream sends bytes as application/octet-stream', async () => {
    const res = await fetch(url('/binary-stream'))
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expect([...new Uint8Array(await res.arrayBuffer())]).toEqual([1, 2, 3, 250, 251])
  })
})

test('a synchronous 4 MiB burst to a reading client arrives whole', async () => {
  const res = await fetch(url('/burst'))
  expect(res.status).toBe(200)
  const body = Buffer.from(await res.arrayBuffer())
  expect(body.length).toBe(4 * 1024 * 1024)
  expect(body.every((b) => b === 0x61)).toBe(true)
})
