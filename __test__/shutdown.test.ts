// close() with many streams open and producing: every event and chunk accepted before
// close() was called arrives, SSE streams then end cleanly and chunked ones are cut
// (no terminating chunk, so their clients see them incomplete), all within the grace
// period and its flush. CI-sized (200 streams); RAT_SCALE=full opens 1,000.
import { expect, test } from 'vitest'
import { createApp } from '../ts/index.js'
import { RawClient } from './support/raw.js'
import { RawSseClient } from './support/sse.js'
import { scale } from './support/scale.js'
import { sleep, waitFor, within } from './support/wait.js'

test('close() with open streams delivers everything accepted before it and ends every stream', async () => {
  const n = scale(200, 1000)
  const grace = 1000
  const app = createApp({ heartbeatMs: 0, onError: () => {} })
  // Per stream: how many events or chunks its producer had handed over.
  const sent: number[] = []
  app.sse('/sse/<int:k>', (req, stream) => {
    const k = req.params.k
    sent[k] = 0
    const t = setInterval(() => {
      stream.send(`event ${sent[k]}`, { id: String(sent[k]) })
      sent[k]++
    }, 10)
    stream.signal.addEventListener('abort', () => clearInterval(t))
  })
  app.chunked('/bytes/<int:k>', (req, stream) => {
    const k = req.params.k
    sent[k] = 0
    const t = setInterval(() => {
      stream.write(`chunk ${sent[k]}\n`)
      sent[k]++
    }, 10)
    stream.signal.addEventListener('abort', () => clearInterval(t))
  })
  const { port } = await app.listen({ host: '127.0.0.1', port: 0 })
  const sse: RawSseClient[] = []
  const bytes: RawClient[] = []
  for (let k = 0; k < n; k++) {
    if (k % 2 === 0) sse[k] = new RawSseClient(port, `/sse/${k}`)
    else bytes[k] = new RawClient(port, `/bytes/${k}`)
  }
  const received = (k: number) => (k % 2 === 0 ? sse[k].count : bytes[k].body().toString().split('\n').length - 1)
  await waitFor(`${n} streams producing`, () => sent.filter((s) => s >= 3).length === n, { timeoutMs: 20_000 })
  // The handlers' own counts when close() is called (from a timer, between producer turns).
  const { accepted, t0, closed } = await new Promise<{ accepted: number[]; t0: number; closed: Promise<void> }>((resolve) =>
    setTimeout(() => {
      const accepted = [...sent]
      resolve({ accepted, t0: Date.now(), closed: app.close(grace) })
    }, 5),
  )
  await within(grace + 5000, 'close()', closed)
  const took = Date.now() - t0
  console.log(`shutdown: ${n} streams, close(${grace}) took ${took} ms; ${accepted.reduce((a, b) => a + b, 0)} events and chunks accepted before it`)
  expect(took).toBeLessThan(grace + 1500)
  const ends = await within(5000, 'every client to see its end', Promise.all([...sse.filter(Boolean), ...bytes.filter(Boolean)].map((c) => c.ended)))
  expect(ends.length).toBe(n)
  const problems: string[] = []
  for (let k = 0; k < n; k++) {
    const got = received(k)
    if (got < accepted[k]) problems.push(`stream ${k}: ${got} of ${accepted[k]} accepted before close()`)
    if (k % 2 === 0) {
      const ids = sse[k].events.map((e) => Number(e.id))
      if (!ids.every((id, i) => id === i)) problems.push(`SSE stream ${k}: ids out of sequence`)
      if ((await sse[k].ended) !== 'complete') problems.push(`SSE stream ${k} did not end cleanly`)
    } else {
      const lines = bytes[k].body().toString().split('\n').slice(0, -1)
      if (!lines.every((l, i) => l === `chunk ${i}`)) problems.push(`chunked stream ${k}: chunks out of sequence`)
      if ((await bytes[k].ended) !== 'closed') problems.push(`chunked stream ${k} ended with its last chunk`)
    }
  }
  expect(problems).toEqual([])
  await sleep(50)
  for (const c of [...sse, ...bytes]) c?.destroy()
}, scale(30_000, 120_000))
