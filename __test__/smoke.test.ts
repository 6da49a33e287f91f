import { afterAll, beforeAll, expect, test } from 'vitest'
import { createApp } from '../ts/index.js'

const app = createApp({ heartbeatMs: 0 })
app.get('/hello', () => 'hello')
let base = ''
beforeAll(async () => {
  const { port } = await app.listen({ port: 0 })
  base = `http://127.0.0.1:${port}`
})
afterAll(() => app.close(100))

test('a JS handler answers through the engine', async () => {
  const r = await fetch(`${base}/hello`)
  expect(r.status).toBe(200)
  expect(await r.text()).toBe('hello')
})
