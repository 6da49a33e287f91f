// The reliability runs: a soak of channel subscribers with reconnects, and a churn of
// connect / subscribe / leave cycles, each against the Node server of
// __test__/fixtures/soak-server.mts with the `rat-bench` load client in its own process.
// `npm run soak` (scripts/soak.mjs) runs them at full scale, __test__/reliability.test.ts
// CI-sized: the same code.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { sampleTree } from '../../bench/lib/proc.mjs'

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * The `rat-bench` binary: `release` builds it in release (the soak), else the one
 * `cargo test` leaves in target/debug is used (built if missing).
 */
export function ratBench({ release = false } = {}) {
  const profile = release ? 'release' : 'debug'
  const bin = join(targetDir, profile, 'rat-bench')
  if (release || !existsSync(bin)) {
    const args = ['build', '-p', 'rat-bench', ...(release ? ['--release'] : [])]
    execFileSync('cargo', args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
  }
  return bin
}

/** The server's report once `atRest(report)` holds, or its last one after `settleMs`. */
async function settled(server, atRest, settleMs) {
  const deadline = Date.now() + settleMs
  let m = await server.metrics()
  while (!atRest(m) && Date.now() < deadline) {
    await sleep(100)
    m = await server.metrics()
  }
  return m
}

/**
 * Once the server is at rest (or after `settleMs`): its report, its memory at the warm-up
 * reading and now, after a full GC, and the RSS figures of the two.
 */
async function restAndMemory(server, atRest, settleMs, warm) {
  const after = await settled(server, atRest, settleMs)
  const warmMem = (await warm).memory
  const end = (await server.metrics({ gc: true })).memory
  const rss = { warmMiB: warmMem.rss / MiB, endMiB: end.rss / MiB, growth: (end.rss - warmMem.rss) / warmMem.rss }
  return { after, warmMem, end, rss }
}

/** The hard limit of open files (a server with 10,000 subscribers needs more than 1024). */
export function hardNofile() {
  try {
    return execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
  } catch {
    return 'unlimited'
  }
}

/**
 * Starts the soak server (raising its open-file limit to `nofile`, by default the hard
 * limit) and resolves once it listens: `{ proc, port, metrics(), sample(), stop() }`.
 */
export async function startServer({ args = [], nofile = hardNofile() } = {}) {
  const server = join(root, '__test__', 'fixtures', 'soak-server.mts')
  const proc = spawn('sh', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, '--expose-gc', '--import', 'tsx', server, ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, NODE_ENV: 'production' },
  })
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r(code ?? signal)))
  const lines = createInterface({ input: proc.stdout })
  const port = await new Promise((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error('the soak server did not start within 30 s')), 30_000)
    lines.on('line', (line) => {
      const m = /^listening (\d+)$/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolveP(Number(m[1]))
      }
    })
    exited.then((code) => reject(new Error(`the soak server exited (${code}) before listening`)))
  })
  return {
    proc,
    port,
    exited,
    /** The server's counters, memory and CPU time, over IPC (after a full GC if `gc`). */
    metrics: ({ gc = false } = {}) =>
      new Promise((resolveM, reject) => {
        const timer = setTimeout(() => reject(new Error('no metrics from the soak server within 10 s')), 10_000)
        proc.once('message', (m) => {
          clearTimeout(timer)
          resolveM(m)
        })
        proc.send({ cmd: 'metrics', gc })
      }),
    /** Resolves with the time (Date.now()) at which the server prints the line `text`. */
    printed: (text) => new Promise((resolveL) => lines.on('line', (line) => line === text && resolveL(Date.now()))),
    /** CPU seconds and RSS bytes from /proc (no work for the server's event loop). */
    sample: () => sampleTree(proc.pid),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
    },
  }
}

/**
 * Runs `rat-bench <args>`; `onMarker(name)` is called at each `phase <name>` it prints.
 * Resolves with its JSON result.
 */
export function runBench(bin, args, onMarker = () => {}) {
  return new Promise((resolveB, reject) => {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    proc.stdout.on('data', (d) => (out += d))
    createInterface({ input: proc.stderr }).on('line', (line) => {
      const m = /^phase (\S+)$/.exec(line)
      if (m) onMarker(m[1])
      else err += line + '\n'
    })
    proc.on('error', reject)
    proc.on('close', (code) => {
      if (code !== 0) return reject(new Error(`rat-bench ${args.join(' ')} exited ${code}: ${err}`))
      try {
        resolveB(JSON.parse(out))
      } catch {
        reject(new Error(`rat-bench printed no JSON: ${out}\n${err}`))
      }
    })
  })
}

/** Least-squares slope of `ys` over `xs`. */
export function slope(xs, ys) {
  const n = xs.length
  if (n < 2) return 0
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my)
    den += (xs[i] - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

const MiB = 1 << 20

/**
 * The soak: `subscribers` subscribers for `seconds` at `rate` publishes/s, `reconnectsPerS`
 * reconnects/s with Last-Event-ID. The server's RSS is sampled every `sampleMs`; its slope
 * is fitted over the samples after `warmupS` (from the moment all are connected).
 */
export async function soak({ bin, subscribers, seconds, rate = 10, reconnectsPerS = 10, reconnectDelayMs = 2000, warmupS = 30, sampleMs = 1000, settleS = 60, log = () => {} }) {
  const server = await startServer({ args: ['--rate', String(rate)] })
  const samples = []
  /** [seconds, heapUsed MiB, external MiB] */
  const heap = []
  let connectedAt = null
  let sampler = null
  try {
    const started = performance.now()
    let ticks = 0
    sampler = setInterval(() => {
      const s = server.sample()
      samples.push({ t: (s.at - started) / 1000, rss: s.rss, cpuS: s.cpuS })
      // The JS heap beside it, every 10 samples (over IPC: a little work for the server).
      if (ticks++ % 10 === 0) {
        const t = (s.at - started) / 1000
        server.metrics().then((m) => heap.push([Math.round(t), Math.round((m.memory.heapUsed / MiB) * 10) / 10, Math.round((m.memory.external / MiB) * 10) / 10]), () => {})
      }
    }, sampleMs)
    const client = await runBench(
      bin,
      [
        'soak', '--addr', `127.0.0.1:${server.port}`, '--connections', String(subscribers),
        '--warmup', '0', '--duration', String(seconds), '--reconnects-per-s', String(reconnectsPerS),
        '--reconnect-delay-ms', String(reconnectDelayMs), '--settle', String(settleS), '--connect-timeout', '120',
      ],
      (marker) => {
        log(`soak: ${marker}`)
        if (marker === 'connected') connectedAt = (performance.now() - started) / 1000
      },
    )
    clearInterval(sampler)
    // The client has exited: its connections and subscriptions must be gone.
    const atRest = (m) => m.metrics.activeConnections === 0 && m.metrics.activeStreams === 0 && m.channels.soak.subscribers === 0
    const after = await settled(server, atRest, 10_000)
    const steady = samples.filter((s) => connectedAt !== null && s.t >= connectedAt + warmupS && s.t <= connectedAt + seconds)
    const fit = slope(steady.map((s) => s.t / 60), steady.map((s) => s.rss / MiB))
    const window = steady.length >= 2 ? (steady.at(-1).t - steady[0].t) : 0
    return {
      client,
      server: after,
      atRest: atRest(after),
      rss: {
        samples: samples.length,
        steadySamples: steady.length,
        warmupS,
        atConnectedMiB: (samples.find((s) => s.t >= (connectedAt ?? 0))?.rss ?? 0) / MiB,
        steadyFirstMiB: (steady[0]?.rss ?? 0) / MiB,
        steadyLastMiB: (steady.at(-1)?.rss ?? 0) / MiB,
        peakMiB: Math.max(0, ...samples.map((s) => s.rss)) / MiB,
        slopeMiBPerMin: fit,
        steadyWindowS: window,
        /** [seconds since start, MiB] every `sampleMs`. */
        series: samples.map((s) => [Math.round(s.t * 10) / 10, Math.round((s.rss / MiB) * 10) / 10]),
        heap,
      },
      serverCpuS: (samples.at(-1)?.cpuS ?? 0) - (samples[0]?.cpuS ?? 0),
    }
  } finally {
    clearInterval(sampler)
    await server.stop()
  }
}

/**
 * The churn: `cycles` connect / subscribe / leave cycles over the SSE generator, chunked
 * generator, `(req, stream)` SSE, async plain and channel routes. Memory is read after a
 * full GC at each tenth of the cycles and at the end (once the server is at rest); growth
 * is counted from the first `warmupFraction` of the cycles. The server's counters must be
 * back at rest.
 */
export async function churn({ bin, cycles, concurrency = 64, earlyPercent = 20, warmupFraction = 0.1, settleMs = 10_000, log = () => {} }) {
  const server = await startServer({ args: ['--rate', '1'] })
  /** [percent of the cycles, RSS, heapUsed, heapTotal (MiB)], each after a full GC */
  const series = []
  try {
    let warm = null
    // The client marks each tenth: the first mark at or past the warm-up.
    const warmPct = Math.ceil(warmupFraction * 10) * 10
    const client = await runBench(
      bin,
      [
        'churn', '--addr', `127.0.0.1:${server.port}`, '--cycles', String(cycles), '--concurrency', String(concurrency),
        '--paths', '/churn/sse,/churn/chunked,/churn/stream,/churn/plain,/churn/channel', '--early-percent', String(earlyPercent),
      ],
      (marker) => {
        // Memory after a full GC at each tenth (the server's own reading, over IPC).
        const pct = Number(marker.slice('churn-'.length))
        const m = server.metrics({ gc: true }).then((m) => {
          series.push([pct, Math.round((m.memory.rss / MiB) * 10) / 10, Math.round((m.memory.heapUsed / MiB) * 10) / 10, Math.round((m.memory.heapTotal / MiB) * 10) / 10])
          return m
        })
        if (pct >= warmPct && warm === null) warm = m
        log(`churn: ${marker}%`)
      },
    )
    // Counters at rest: every connection closed, every stream and subscription gone,
    // every handler's finally run.
    const atRest = (m) =>
      m.metrics.activeConnections === 0 && m.metrics.activeStreams === 0 && m.channels.churn.subscribers === 0 && m.counts.started === m.counts.finished
    if (warm === null) throw new Error(`churn: no progress mark at ${warmPct}% of the cycles`)
    const { after, warmMem, end, rss } = await restAndMemory(server, atRest, settleMs, warm)
    return {
      client,
      server: after,
      atRest: atRest(after),
      rss: {
        ...rss,
        heapUsedWarmMiB: warmMem.heapUsed / MiB,
        heapUsedEndMiB: end.heapUsed / MiB,
        series: series.sort((a, b) => a[0] - b[0]),
      },
    }
  } finally {
    await server.stop()
  }
}

/**
 * The WebSocket churn: `cycles` sockets on the soak server's /churn/ws (which subscribes
 * each to a channel publishing every 50 ms and echoes), `concurrency` at a time, from the
 * `ws` client. Each sends a message and waits for its echo, then leaves one of three ways:
 * the TCP connection cut without a close frame, a close handshake, or a close with a code
 * after a channel event arrived. Memory is read after a full GC once `warmupFraction` of
 * the cycles are done and at the end (once the server is at rest); the server's counters
 * must be back at rest.
 */
export async function wsChurn({ cycles, concurrency = 32, warmupFraction = 0.5, settleMs = 10_000, cycleTimeoutMs = 10_000 }) {
  const { default: WebSocket } = await import('ws')
  const server = await startServer({ args: ['--rate', '1'] })
  const url = `ws://127.0.0.1:${server.port}/churn/ws`
  const client = { cycles: 0, failed: 0, cut: 0, closed: 0, afterEvent: 0, errors: [] }
  const one = (i) =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url)
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`cycle ${i}: not over within ${cycleTimeoutMs} ms`))
      }, cycleTimeoutMs)
      const done = (kind) => {
        clearTimeout(timer)
        client[kind]++
        resolve()
      }
      // 'sent' until the echo, then 'echoed' (waiting for a channel event), then 'leaving'.
      let step = 'sent'
      const leave = (kind, close) => {
        step = 'leaving'
        if (kind === 'cut') {
          ws.terminate()
          return done('cut')
        }
        ws.close(...close)
        ws.once('close', () => done(kind))
      }
      ws.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      ws.on('open', () => ws.send(`m${i}`))
      ws.on('message', (data) => {
        const text = String(data)
        if (step === 'sent' && text === `m${i}`) {
          step = 'echoed'
          if (i % 3 === 0) leave('cut')
          else if (i % 3 === 1) leave('closed', [1000])
        } else if (step === 'echoed' && text === 'tick') {
          leave('afterEvent', [4000, 'bye'])
        } else if (text !== 'tick') {
          clearTimeout(timer)
          ws.terminate()
          reject(new Error(`cycle ${i}: unexpected message ${text.slice(0, 80)} (${step})`))
        }
      })
    })
  try {
    let next = 0
    let warm = null
    const warmAt = Math.ceil(cycles * warmupFraction)
    const worker = async () => {
      while (next < cycles) {
        const i = next++
        try {
          await one(i)
        } catch (err) {
          client.failed++
          if (client.errors.length < 5) client.errors.push(String(err))
        }
        client.cycles++
        if (client.cycles === warmAt) warm = server.metrics({ gc: true })
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    const atRest = (m) =>
      m.metrics.activeConnections === 0 && m.channels.churn.subscribers === 0 && m.ws.opened === m.ws.closed
    if (warm === null) throw new Error('ws churn: no warm-up reading')
    const { after, rss } = await restAndMemory(server, atRest, settleMs, warm)
    return { client, server: after, atRest: atRest(after), rss }
  } finally {
    await server.stop()
  }
}
