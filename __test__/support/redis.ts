// A real redis-server on a free port for the tests that share channels through Redis.
import { spawn, type ChildProcess } from 'node:child_process'
import { statSync } from 'node:fs'
import net from 'node:net'
import { delimiter, join } from 'node:path'
import { waitFor } from './wait.js'

/** `redis-server` on PATH (a regular file with an execute bit, as a shell finds it), or null. */
export const redisServer: string | null =
  (process.env.PATH ?? '')
    .split(delimiter)
    .map((d) => join(d, 'redis-server'))
    .find((p) => {
      const st = statSync(p, { throwIfNoEntry: false })
      return st !== undefined && st.isFile() && (st.mode & 0o111) !== 0
    }) ?? null

export async function freePort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as net.AddressInfo
  await new Promise((resolve) => srv.close(resolve))
  return port
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => (s.destroy(), resolve(true)))
    s.on('error', () => resolve(false))
  })

/** A redis-server child (no persistence); `stop()` kills it, `start()` starts it again on the same port. */
export class Redis {
  #proc: ChildProcess | null = null
  private constructor(readonly port: number) {}

  static async start(): Promise<Redis> {
    const r = new Redis(await freePort())
    await r.start()
    return r
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`
  }

  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
    this.#proc = spawn(redisServer!, args, { stdio: 'ignore' })
    await waitFor('redis-server to accept connections', () => accepts(this.port), { timeoutMs: 10_000, intervalMs: 20 })
  }

  async stop(): Promise<void> {
    const p = this.#proc
    this.#proc = null
    if (!p || p.exitCode !== null) return
    const gone = new Promise((resolve) => p.on('exit', resolve))
    p.kill('SIGKILL')
    await gone
  }
}
