// What `npm run bench` runs: the servers (ours, the floor, the peers) and the scenarios of
// issue 6, each scenario being one rat-bench invocation plus the server's publish interval.

import { existsSync, readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { execFileSync } from 'node:child_process'
import { redisServer } from './redis.mjs'

const MiB = 1 << 20
/** Publish interval for scenarios that do not subscribe: effectively never. */
const NO_PUBLISH = 3_600_000

/** `RAT_BENCH_TLS=1`: the TLS scenarios and the TLS-only peer (see `scenarios`). */
const TLS = !!process.env.RAT_BENCH_TLS
/** `RAT_BENCH_REDIS=1`: the Redis scenarios and our server sharing its channel through Redis. */
const REDIS = !!process.env.RAT_BENCH_REDIS
/** The Redis scenarios: each run by our server alone (a local channel) and as a Redis group. */
const REDIS_SCENARIOS = ['redis-broadcast-10k-100ms', 'redis-publish-rate']
/** Subscribers of `redis-publish-rate`, each of which must get every event. */
export const RATE_SUBSCRIBERS = 10

/**
 * Whether `server` runs in `scenario`: a plain scenario needs a plain server (all but
 * `plain: false`), a TLS one a server whose `tls` lists the scenario's protocol. In a TLS
 * scenario the runner hands the server TLS_CERT and TLS_KEY (PEM paths) and it serves
 * TLS (bench/run.mjs).
 */
export function serves(server, scenario) {
  if (scenario.servers && !scenario.servers.includes(server.name)) return false
  if (server.scenarios && !server.scenarios.includes(scenario.name)) return false
  return scenario.tls ? (server.tls ?? []).includes(scenario.tls) : server.plain !== false
}

/**
 * Every server. `available(root)` returns null when it can run, else why not (the run
 * records it as skipped). Peers run from bench/peers (its own package.json).
 */
export function servers({ root, targetDir }) {
  const peers = join(root, 'bench', 'peers')
  const node = process.execPath
  const peerInstalled = (pkg) => (existsSync(join(peers, 'node_modules', pkg)) ? null : `bench/peers: ${pkg} is not installed`)
  const bun = join(peers, 'node_modules', 'bun', 'bin', 'bun.exe')
  const bunRuns = () => {
    try {
      execFileSync(bun, ['--version'], { stdio: 'ignore' })
      return null
    } catch (err) {
      return `the bun binary does not run (${err.code ?? err.message})`
    }
  }
  return [
    {
      name: 'rat-engine',
      label: 'rat-engine (ours)',
      ours: true,
      tls: ['http1', 'h2'],
      cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
      cwd: root,
      available: () => {
        if (!existsSync(join(root, 'ts', 'index.ts'))) return 'ts/index.ts does not exist yet'
        if (!readdirSync(root).some((f) => f.endsWith('.node'))) return 'the addon is not built: run `npm run build:native`'
        if (!existsSync(join(root, 'dist', 'index.js'))) return 'the TypeScript is not compiled: run `npm run build:ts`'
        return null
      },
    },
    // `RAT_BENCH_BASELINE=<checkout>`: our server from another checkout of the project
    // (built there: `git worktree add ../base <commit> && cd ../base && npm ci && npm run
    // build`), so that a change's before/after ratios come from one run. It takes the TLS
    // scenarios too (a checkout without TLS fails them).
    ...(process.env.RAT_BENCH_BASELINE
      ? [
          {
            name: 'rat-engine-baseline',
            label: 'rat-engine (baseline checkout)',
            tls: ['http1', 'h2'],
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: resolve(process.env.RAT_BENCH_BASELINE),
            available: () =>
              readdirSync(resolve(process.env.RAT_BENCH_BASELINE)).some((f) => f.endsWith('.node'))
                ? null
                : `${process.env.RAT_BENCH_BASELINE} has no built addon`,
          },
        ]
      : []),
    // `RAT_BENCH_EDGE=1`: our server with the production edge on, to measure what it costs
    // against the plain one in the same run: CORS and a bearer token on /hello checked by
    // the engine (the client sends Origin and the token; broadcast subscribers an Origin),
    // or one JS hook (`app.use`) on /hello.
    ...(process.env.RAT_BENCH_EDGE
      ? [
          {
            name: 'rat-engine-cors-token',
            label: 'rat-engine, CORS + token',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            env: { BENCH_EDGE: 'cors-token' },
            clientArgs: {
              hello: ['--header', 'origin: https://app.example|authorization: Bearer bench-token'],
              'broadcast-10k-100ms': ['--header', 'origin: https://app.example'],
            },
            available: () => null,
          },
          {
            name: 'rat-engine-hook',
            label: 'rat-engine, one JS hook',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            env: { BENCH_EDGE: 'hook' },
            available: () => null,
          },
        ]
      : []),
    // `RAT_BENCH_COMPRESSION=1`: our server broadcasting ~2 KiB JSON events, plain and
    // gzip-compressed (the client decodes them), for the compression scenario.
    ...(process.env.RAT_BENCH_COMPRESSION
      ? [
          {
            name: 'rat-engine-2k',
            label: 'rat-engine, 2 KiB events',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            env: { PUB_BYTES: '2048' },
            available: () => null,
          },
          {
            name: 'rat-engine-2k-gzip',
            label: 'rat-engine, 2 KiB events, gzip',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            env: { PUB_BYTES: '2048', BENCH_EDGE: 'gzip' },
            clientArgs: {
              'broadcast-10k-100ms': ['--header', 'accept-encoding: gzip', '--decode', 'gzip'],
              'broadcast-1k-100ms': ['--header', 'accept-encoding: gzip', '--decode', 'gzip'],
            },
            available: () => null,
          },
          {
            name: 'bun-2k-gzip',
            label: 'Bun.serve, 2 KiB events, gzip per connection',
            cmd: [bun, 'bun.mjs'],
            cwd: peers,
            env: { PUB_BYTES: '2048', BENCH_GZIP: '1' },
            clientArgs: {
              'broadcast-10k-100ms': ['--header', 'accept-encoding: gzip', '--decode', 'gzip'],
              'broadcast-1k-100ms': ['--header', 'accept-encoding: gzip', '--decode', 'gzip'],
            },
            available: () => bunRuns(),
          },
        ]
      : []),
    // `RAT_BENCH_REDIS=1`: our server with its channel shared through a redis-server of the
    // run's own, as several processes (the scenario's `cluster`; bench/lib/redis.mjs).
    ...(REDIS
      ? [
          {
            name: 'rat-engine-redis',
            label: 'rat-engine, channel through Redis',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            group: true,
            redis: true,
            scenarios: REDIS_SCENARIOS,
            available: () => (redisServer() ? null : 'redis-server is not on PATH'),
          },
          // The split without Redis: the Redis group's subscriber processes, each publishing
          // to a local channel of its own at the same moments (PUB_ALIGN: the multiples of
          // the interval on the wall clock), as an event read from Redis reaches both at once:
          // what two processes on one core cost by themselves.
          {
            name: 'rat-engine-split',
            label: 'rat-engine, 2 processes, a local channel each',
            cmd: [node, '--import', 'tsx', 'examples/bench-server.ts'],
            cwd: root,
            env: { PUB_ALIGN: '1' },
            group: true,
            redis: false,
            scenarios: ['redis-broadcast-10k-100ms'],
            available: () => null,
          },
        ]
      : []),
    {
      name: 'floor',
      label: 'floor (Rust mio, 1 thread)',
      floor: true,
      cmd: [join(targetDir, 'release', 'rat-floor')],
      cwd: root,
      available: () => (existsSync(join(targetDir, 'release', 'rat-floor')) ? null : 'rat-floor is not built'),
    },
    { name: 'node-http', label: TLS ? 'node:http (node:https over TLS)' : 'node:http', cmd: [node, 'node-http.mjs'], cwd: peers, tls: ['http1'], available: () => null },
    // The same handler on http2.createSecureServer (HTTP/2 only), for the h2 scenarios.
    ...(TLS
      ? [{ name: 'node-http2', label: 'node:http2 createSecureServer', cmd: [node, 'node-http.mjs'], cwd: peers, env: { HTTP2: '1' }, plain: false, tls: ['h2'], available: () => null }]
      : []),
    { name: 'fastify', label: 'fastify + @fastify/sse', cmd: [node, 'fastify.mjs'], cwd: peers, available: () => peerInstalled('@fastify/sse') },
    { name: 'better-sse', label: 'better-sse', cmd: [node, 'better-sse.mjs'], cwd: peers, available: () => peerInstalled('better-sse') },
    { name: 'hono', label: 'hono + @hono/node-server', cmd: [node, 'hono.mjs'], cwd: peers, available: () => peerInstalled('@hono/node-server') },
    {
      name: 'bun',
      label: 'Bun.serve',
      cmd: [bun, 'bun.mjs'],
      cwd: peers,
      tls: ['http1'], // Bun.serve has no HTTP/2
      available: () => bunRuns(),
    },
  ]
}

/** Events a subscriber has received before a broadcast's window starts (see `scenarios`). */
export const YOUNG_EVENTS = 20

/**
 * The scenarios. `metric` is the headline (higher is better) that ratios compare; `per`
 * names the unit the server's CPU time is divided by; `args(opts)` gives rat-bench's
 * arguments for full or quick runs.
 */
export function scenarios(opts) {
  const window = ['--warmup', opts.warmup, '--duration', opts.duration]
  // A slice of an interleaved rate scenario: half the window. (Run one after the other, the
  // server that ran first in a round measured /hello 5-15% slower, whichever it was.)
  const slice = ['--warmup', opts.warmup, '--duration', Math.max(1, opts.duration / 2)]
  // A broadcast's window starts once the subscribers' first YOUNG_EVENTS events are
  // behind them. Every server here spends ~1.5x its steady CPU per event while its
  // subscribers are young: the phase lasts ~1.5 s at 100 ms publishes and ~3 s at 200 ms, so
  // it counts events (~15), not time. It is in the kernel's TCP path (the same segments and
  // ACKs per second in both phases; more time in waking readers and freeing skbs), and not
  // pinned down further. With a fixed 1 s warmup it reached into the window of a server that
  // connects everyone at once, and not of one that accepts slowly (whose subscribers age
  // while the rest connect).
  const broadcast = (n, pubMs, tls, warmup = Math.max(opts.warmup, (YOUNG_EVENTS * pubMs) / 1000)) => ({
    name: `broadcast-${n / 1000}k-${pubMs}ms${tls ? `-${TLS_NAMES[tls]}` : ''}`,
    title: `/sse/broadcast, ${n.toLocaleString('en-US')} subscribers, publish every ${pubMs} ms${tls ? `, ${TLS_TITLES[tls]}` : ''}`,
    pubMs,
    warmup,
    tls,
    args: [
      'broadcast', '--connections', n, '--connect-timeout', opts.connectTimeout,
      '--warmup', warmup, '--duration', opts.duration, ...tlsArgs(tls),
    ],
    metric: 'events_per_s',
    unit: 'events/s',
    per: 'events',
    subscribers: n,
  })
  const idle = (n, tls) => ({
    name: `idle-${n / 1000}k${tls ? `-${TLS_NAMES[tls]}` : ''}`,
    title: `${n.toLocaleString('en-US')} idle SSE ${tls ? `subscribers, ${TLS_TITLES[tls]}` : 'connections'} (no publishes): server RSS per ${tls ? 'subscriber' : 'connection'}`,
    pubMs: NO_PUBLISH,
    tls,
    args: ['idle', '--connections', n, '--connect-timeout', opts.connectTimeout, '--warmup', 1, '--duration', opts.idleHold, ...tlsArgs(tls)],
    metric: 'rss_per_connection_bytes',
    unit: 'bytes',
    lowerIsBetter: true,
    subscribers: n,
  })
  const tlsScenarios = [
    {
      name: 'hello-tls',
      title: `GET /hello (JS handler) over TLS (HTTP/1.1), 64 keep-alive connections, the servers alternated in ${opts.helloTlsSlices} slices`,
      pubMs: NO_PUBLISH,
      tls: 'http1',
      interleave: opts.helloTlsSlices,
      args: ['hello', '--connections', 64, ...slice, ...tlsArgs('http1')],
      metric: 'requests_per_s',
      unit: 'req/s',
      per: 'requests',
    },
    broadcast(10_000, 100, 'http1'),
    broadcast(10_000, 100, 'h2'),
    idle(10_000, 'http1'),
    idle(10_000, 'h2'),
    {
      name: 'ws-idle-10k-tls',
      title: '10,000 idle WebSockets over TLS (wss) on /ws/echo: server RSS per socket',
      pubMs: NO_PUBLISH,
      tls: 'http1',
      servers: ['rat-engine', 'rat-engine-baseline', 'node-http', 'bun'],
      args: ['ws-idle', '--connections', 10_000, '--connect-timeout', opts.connectTimeout, '--warmup', 1, '--duration', opts.idleHold, ...tlsArgs('http1')],
      metric: 'rss_per_connection_bytes',
      unit: 'bytes',
      lowerIsBetter: true,
      subscribers: 10_000,
    },
  ]
  return [
    {
      name: 'hello',
      title: `GET /hello (JS handler), 64 keep-alive connections, the servers alternated in ${opts.helloSlices} slices`,
      pubMs: NO_PUBLISH,
      interleave: opts.helloSlices,
      args: ['hello', '--connections', 64, ...slice],
      metric: 'requests_per_s',
      unit: 'req/s',
      per: 'requests',
    },
    broadcast(1000, 100),
    broadcast(10_000, 100),
    broadcast(10_000, 10),
    {
      name: 'count',
      title: '/sse/count?n=100, 50 connections',
      pubMs: NO_PUBLISH,
      args: ['count', '--connections', 50, '--n', 100, ...window],
      metric: 'events_per_s',
      unit: 'events/s',
      per: 'events',
    },
    {
      name: 'chunked',
      title: `/chunked, ${opts.chunkedSlices} × ${opts.chunkedTotal / opts.chunkedSlices / MiB} MiB in 64 KiB writes over 4 connections, the servers alternated slice by slice`,
      pubMs: NO_PUBLISH,
      // The host's memory bandwidth, which this scenario measures as much as the server,
      // drifts within a second here: the same server's CPU per byte varies 2x from one
      // 1 GiB run to the next. So every server is started at once and the client goes round
      // them slice by slice (bench/run.mjs, runInterleaved); one long run each compared
      // servers under different conditions.
      interleave: opts.chunkedSlices,
      fixedWork: true,
      // --duration only caps a stalled server here: the work is fixed.
      args: ['chunked', '--connections', 4, '--bytes', opts.chunkedTotal / opts.chunkedSlices / 4, '--size', 64 * 1024, '--duration', 120],
      metric: 'bytes_per_s',
      unit: 'bytes/s',
      per: 'MiB',
      perDivisor: MiB,
    },
    {
      name: 'ws-echo',
      title: 'WebSocket echo /ws/echo (JS handler), 64-byte text messages, 50 connections, one in flight each',
      pubMs: NO_PUBLISH,
      // Only servers with a WebSocket route (node:http serves it with the `ws` package).
      servers: ['rat-engine', 'rat-engine-baseline', 'node-http', 'bun'],
      args: ['ws-echo', '--connections', 50, '--size', 64, ...window],
      metric: 'messages_per_s',
      unit: 'msg/s',
      per: 'messages',
    },
    {
      name: 'ws-broadcast-10k-100ms',
      title: '/ws/broadcast (a channel over WebSocket), 10,000 subscribers, publish every 100 ms',
      pubMs: 100,
      warmup: Math.max(opts.warmup, (YOUNG_EVENTS * 100) / 1000),
      // Ours only: compared with our own SSE figure (broadcast-10k-100ms) of the same run.
      servers: ['rat-engine', 'rat-engine-baseline'],
      args: ['ws-broadcast', '--connections', 10_000, '--connect-timeout', opts.connectTimeout, '--warmup', Math.max(opts.warmup, (YOUNG_EVENTS * 100) / 1000), '--duration', opts.duration],
      metric: 'events_per_s',
      unit: 'events/s',
      per: 'events',
      subscribers: 10_000,
    },
    {
      name: 'ws-idle-10k',
      title: '10,000 idle WebSockets on /ws/echo: server RSS per socket',
      pubMs: NO_PUBLISH,
      servers: ['rat-engine', 'rat-engine-baseline', 'node-http', 'bun'],
      args: ['ws-idle', '--connections', 10_000, '--connect-timeout', opts.connectTimeout, '--warmup', 1, '--duration', opts.idleHold],
      metric: 'rss_per_connection_bytes',
      unit: 'bytes',
      lowerIsBetter: true,
      subscribers: 10_000,
    },
    idle(10_000),
    ...(TLS ? tlsScenarios : []),
    ...(REDIS ? redisScenarios(opts) : []),
  ]
}

/**
 * The Redis scenarios, each run by `rat-engine` (one process, a local channel: the same
 * run's reference) and `rat-engine-redis` (processes sharing the channel through Redis as
 * `cluster` says; bench/lib/redis.mjs); the 10k one also by `rat-engine-split` (its two
 * subscriber processes without Redis, each publishing to a local channel). Placement: our subscribers' processes on CPU 0 as
 * the single server is; redis-server and a separate publisher on CPU 1 with the client.
 */
function redisScenarios(opts) {
  const warmup = Math.max(opts.warmup, (YOUNG_EVENTS * 100) / 1000)
  return [
    {
      name: 'redis-broadcast-10k-100ms',
      title: '/sse/broadcast, 10,000 subscribers, publish every 100 ms: one process with a local channel, or 2 subscriber processes (5,000 each) and a third publishing, through Redis',
      pubMs: 100,
      warmup,
      servers: ['rat-engine', 'rat-engine-redis', 'rat-engine-split'],
      cluster: { subscribers: 2, publisher: true },
      args: ['broadcast', '--connections', 10_000, '--connect-timeout', opts.connectTimeout, '--warmup', warmup, '--duration', opts.duration],
      metric: 'latency_p99_ms',
      unit: 'ms',
      lowerIsBetter: true,
      per: 'events',
      subscribers: 10_000,
    },
    {
      name: 'redis-publish-rate',
      title: `one process publishing as fast as it can, ${RATE_SUBSCRIBERS} subscribers on it that must each get every event: events/s each subscriber received (local channel, or through Redis)`,
      pubMs: 0,
      servers: ['rat-engine', 'rat-engine-redis'],
      cluster: { subscribers: 1, publisher: false },
      stats: true,
      args: ['broadcast', '--connections', RATE_SUBSCRIBERS, '--connect-timeout', opts.connectTimeout, '--warmup', opts.warmup, '--duration', opts.duration],
      metric: 'publishes_per_s',
      unit: 'events/s',
      per: 'events',
    },
  ]
}

/** Scenario name suffixes and title parts of the TLS protocols. */
const TLS_NAMES = { http1: 'tls', h2: 'h2' }
const TLS_TITLES = { http1: 'over TLS (HTTP/1.1, a connection each)', h2: 'over TLS (HTTP/2, 100 streams per connection)' }
/** rat-bench's options for a TLS protocol (none for plain). */
const tlsArgs = (tls) => (tls === 'h2' ? ['--tls', 'h2', '--streams-per-conn', 100] : tls ? ['--tls', tls] : [])

/** Run sizes: `--quick` is a smoke test of the harness, not a measurement. */
export function runOptions(quick) {
  return quick
    ? { rounds: 1, warmup: 0.5, duration: 2, connectTimeout: 20, idleHold: 1, chunkedTotal: 256 * MiB, chunkedSlices: 2, helloSlices: 1, helloTlsSlices: 2, quietWaitMs: 2000 }
    : { rounds: 3, warmup: 1, duration: 10, connectTimeout: 60, idleHold: 3, chunkedTotal: 2048 * MiB, chunkedSlices: 8, helloSlices: 2, helloTlsSlices: 4, quietWaitMs: 30_000 }
}
