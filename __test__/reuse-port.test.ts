// Several processes on one port with listen({ reusePort: true }).
import { request } from 'node:http'
import { expect, test } from 'vitest'
import { runFixture } from './support/child.js'

/** GET on a fresh connection (no agent): the kernel picks a listener per connection. */
function getPid(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/pid', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve(body))
    })
    req.setTimeout(5000, () => req.destroy(new Error('no answer in 5 s')))
    req.on('error', reject)
    req.end()
  })
}

test('three processes listening with reusePort on one port all serve it', async () => {
  const first = runFixture('reuse-port.mts')
  await first.printed('listening ')
  const port = Number(/listening (\d+)/.exec(first.stdout())![1])
  const others = [runFixture('reuse-port.mts', [String(port)]), runFixture('reuse-port.mts', [String(port)])]
  for (const c of others) await c.printed(`listening ${port}`)
  const pids = new Set([first, ...others].map((c) => String(c.proc.pid)))
  const seen = new Set<string>()
  const deadline = Date.now() + 15_000
  // The kernel hashes each connection to one listener: 3 listeners are all picked within a
  // few dozen connections (the chance that 300 miss one is below 3 × (2/3)^300).
  for (let i = 0; i < 300 && seen.size < 3 && Date.now() < deadline; i++) seen.add(await getPid(port))
  expect([...seen].sort()).toEqual([...pids].sort())
})
