// The Redis group of `npm run bench` (RAT_BENCH_REDIS=1, bench/lib/catalog.mjs): a
// redis-server of the run's own and our server as several processes sharing their channel
// through it (or, for comparison, the same processes with a local channel each), started
// as one handle that the runner samples and stops like one server.

import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import net from 'node:net'
import { delimiter, join } from 'node:path'
import { startServer, stopProcess } from './proc.mjs'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Publish interval of a process that only serves subscribers: effectively never. */
const NO_PUBLISH = 3_600_000

/** redis-server's path on PATH (a regular executable file, as a shell finds it), or null. */
export function redisServer() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const file = join(dir, 'redis-server')
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {
      // not there
    }
  }
  return null
}

async function freePort() {
  const srv = net.createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address()
  await new Promise((r) => srv.close(r))
  return port
}

/** Starts redis-server (no persistence) on a free port, pinned to `cpu`; resolves once it accepts. */
async function startRedis(cpu) {
  const port = await freePort()
  const child = spawn('taskset', ['-c', String(cpu), redisServer(), '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  for (let i = 0; i < 250; i++) {
    if (child.exitCode !== null) break
    const up = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)))
      s.on('error', () => r(false))
    })
    if (up) return { child, port, url: `redis://127.0.0.1:${port}/0` }
    await sleep(20)
  }
  child.kill('SIGKILL')
  throw new Error(`redis-server did not start on port ${port}`)
}

/**
 * `server` as `scenario.cluster` says, sharing its channel through a fresh redis-server:
 * `subscribers` processes on `cpu` (ports `port`, `port + 1`, ...: the client's addresses),
 * and with `publisher` one more process that publishes and serves nobody, on
 * `sideCpu` with redis-server. Without `publisher` the subscriber process publishes (and
 * reads its events back from Redis). Resolves with a handle like `startServer`'s, plus
 * `pids` (our processes: what the runner counts as the server), `redisPid`, `addrs` and
 * `statsPort` (the publishing process, for GET /stats).
 */
export async function startGroup(server, scenario, { cpu, sideCpu, port }) {
  // `server.redis === false`: the same processes without Redis, each publishing to its own
  // local channel (the cost of the split alone).
  const { subscribers } = scenario.cluster
  const publisher = scenario.cluster.publisher && server.redis !== false
  const redis = server.redis === false ? null : await startRedis(sideCpu)
  const handles = []
  const stopAll = async () => {
    await Promise.all(handles.map((h) => h.stop()))
    if (redis) await stopProcess(redis.child, 1000)
  }
  try {
    const env = redis ? { ...server.env, REDIS_URL: redis.url, REDIS_KEY_PREFIX: `bench:${port}:` } : { ...server.env }
    for (let k = 0; k < subscribers; k++) {
      const pubMs = publisher ? NO_PUBLISH : scenario.pubMs
      handles.push(await startServer({ ...server, env, name: `${server.name}#${k + 1}` }, { cpu, port: port + k, pubMs }))
    }
    if (publisher) {
      handles.push(await startServer({ ...server, env, name: `${server.name}-publisher` }, { cpu: sideCpu, port: port + subscribers, pubMs: scenario.pubMs }))
    }
  } catch (err) {
    await stopAll()
    throw err
  }
  return {
    pid: handles[0].pid,
    pids: handles.map((h) => h.pid),
    redisPid: redis?.child.pid,
    addrs: handles.slice(0, subscribers).map((_, k) => `127.0.0.1:${port + k}`),
    statsPort: port + handles.length - 1,
    stop: stopAll,
    exited: () => {
      const gone = handles.find((h) => h.exited() !== null)
      if (gone) return gone.exited()
      return redis ? (redis.child.exitCode ?? redis.child.signalCode) : null
    },
    stderr: handles.flatMap((h) => h.stderr),
  }
}

/** GET /stats of the publishing process: `{ published, rejected, at }` (`at` in ns). */
export async function readStats(port) {
  const res = await fetch(`http://127.0.0.1:${port}/stats`, { signal: AbortSignal.timeout(10_000) })
  const s = JSON.parse(await res.text())
  return { published: s.published, rejected: s.rejected, atNs: BigInt(s.at) }
}
