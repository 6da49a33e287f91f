// Type-level tests of the public generics. expectTypeOf and @ts-expect-error only fail
// under tsc, so the last test runs tsc on this file (tsconfig.types.json).
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, expectTypeOf, test } from 'vitest'
import {
  createApp,
  type AddressInfo,
  type ChannelMetrics,
  type EngineMetrics,
  type PathParams,
  RatError,
  sseEvent,
  SseEvent,
  ChunkedStream,
  RatRequest,
  SseStream,
} from '../ts/index.js'

describe('typed path parameters', () => {
  test('follow the pattern', () => {
    expectTypeOf<PathParams<'/a/<int:id>/:name'>>().toEqualTypeOf<{ id: number; name: string }>()
    expectTypeOf<PathParams<'/f/<float:x>/<path:rest>'>>().toEqualTypeOf<{ x: number; rest: string }>()
    expectTypeOf<PathParams<'/u/<id>/*tail'>>().toEqualTypeOf<{ id: string; tail: string }>()
    expectTypeOf<PathParams<'/s/<uuid:id>/{slug}'>>().toEqualTypeOf<{ id: string; slug: string }>()
    expectTypeOf<PathParams<'/static/path'>>().toEqualTypeOf<{}>()
    // A path only known at run time gives the loose record.
    expectTypeOf<PathParams<string>>().toEqualTypeOf<Record<string, string | number>>()
  })

  test('reach handlers of every route kind', () => {
    const app = createApp() // never started
    app.get('/a/<int:id>/:name', (req) => {
      expectTypeOf(req.params).toEqualTypeOf<{ id: number; name: string }>()
      expectTypeOf(req).toEqualTypeOf<RatRequest<{ id: number; name: string }>>()
      // @ts-expect-error no such parameter
      void req.params.missing
      return null
    })
    app.post('/p/:x', (req) => expectTypeOf(req.params.x).toEqualTypeOf<string>())
    app.sse('/s/<int:n>', (req, stream) => {
      expectTypeOf(req.params.n).toEqualTypeOf<number>()
      expectTypeOf(stream.send).returns.toEqualTypeOf<boolean>()
      // The engine's side of a stream and a request is not part of their types.
      // @ts-expect-error no internals
      void stream._flush
      // @ts-expect-error no internals
      void req._abort
    })
    app.sse('/g/<float:x>', async function* (req) {
      expectTypeOf(req.params.x).toEqualTypeOf<number>()
      yield sseEvent({ any: 'json' }, { event: 'e' })
    })
    app.chunked('/c/<path:rest>', (req) => {
      expectTypeOf(req.params.rest).toEqualTypeOf<string>()
    })
    app.ndjson('/n/:id', async function* (req) {
      expectTypeOf(req.params.id).toEqualTypeOf<string>()
      yield { id: req.params.id }
    })
  })
})

test('request fields, listen and metrics are typed', () => {
  expectTypeOf<RatRequest['query']>().toEqualTypeOf<Record<string, string | string[]>>()
  expectTypeOf<RatRequest['headers']>().toEqualTypeOf<Record<string, string | string[]>>()
  expectTypeOf<RatRequest['lastEventId']>().toEqualTypeOf<string | null>()
  expectTypeOf<RatRequest['signal']>().toEqualTypeOf<AbortSignal>()
  expectTypeOf<RatRequest['body']>().toEqualTypeOf<Buffer>()
  const app = createApp()
  expectTypeOf(app.listen).returns.toEqualTypeOf<Promise<AddressInfo>>()
  expectTypeOf(app.metrics).returns.toEqualTypeOf<EngineMetrics>()
  expectTypeOf<EngineMetrics['activeStreams']>().toEqualTypeOf<number>()
  expectTypeOf<ChannelMetrics['closedSlow']>().toEqualTypeOf<number>()
  // Checked by the types, and at run time for JS callers.
  // @ts-expect-error slowClient is one of two policies
  expect(() => app.channel('x', { slowClient: 'ignore' })).toThrow(/invalid slowClient "ignore": use 'close' or 'drop-oldest'/)
})

test('an SSE event is built explicitly: an unknown option is a type error and a RatError', () => {
  const ch = createApp().channel('typed-events') // never started
  expectTypeOf(sseEvent('d', { event: 'e', id: 1, retry: 10 })).toEqualTypeOf<SseEvent>()
  expectTypeOf(ch.publish).returns.toEqualTypeOf<string>()
  const caught = (fn: () => unknown) => {
    try {
      fn()
    } catch (err) {
      return err
    }
    throw new Error('did not throw')
  }
  // @ts-expect-error `evnt` is not an option
  const e1 = caught(() => ch.publish('x', { evnt: 'typo' }))
  // @ts-expect-error `data` belongs to the first argument
  const e2 = caught(() => sseEvent('x', { event: 'e', data: 1 }))
  // @ts-expect-error an id is a string or a number
  const e3 = caught(() => ch.publish('x', { id: { n: 1 } }))
  for (const e of [e1, e2, e3]) {
    expect(e).toBeInstanceOf(RatError)
    expect((e as RatError).code).toBe('ERR_INVALID_ARGUMENT')
  }
  expect((e1 as Error).message).toBe('unknown SSE event option "evnt": use event, id or retry')
  // An SseEvent carries its fields: options beside it are refused.
  expect(() => ch.publish(sseEvent('x'), { event: 'e' })).toThrow(/carries its own fields/)
})

test('requests, streams and channels are made by the app, not by `new`', () => {
  // @ts-expect-error private constructor
  expect(() => new RatRequest()).toThrow(RatError)
  // @ts-expect-error private constructor
  expect(() => new SseStream()).toThrow(RatError)
  // @ts-expect-error private constructor
  expect(() => new ChunkedStream()).toThrow(RatError)
  // @ts-expect-error private constructor
  expect(() => new SseEvent('x', [])).toThrow(RatError)
})

test('the suite type-checks (tsc on this file and what it imports)', async () => {
  const root = join(__dirname, '..')
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const result = await new Promise<{ code: number; out: string }>((resolve) =>
    execFile(process.execPath, [tsc, '-p', join(__dirname, 'tsconfig.types.json')], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    ),
  )
  expect(result.out).toBe('')
  expect(result.code).toBe(0)
}, 60_000)
