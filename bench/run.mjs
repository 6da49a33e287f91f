#!/usr/bin/env node
// `npm run bench`: our engine, the floor and the Node/Bun peers side by side on this
// machine (docs/benchmarks.md). Each server runs alone on CPU 0, the Rust load client on
// CPU 1; every scenario runs every server that speaks its protocol in turn, round after
// round; the server's CPU and RSS are read from /proc at the client's window markers.
// More servers and scenarios by environment: RAT_BENCH_TLS, RAT_BENCH_EDGE,
// RAT_BENCH_COMPRESSION, RAT_BENCH_BASELINE, RAT_BENCH_REDIS (bench/lib/catalog.mjs).
// RAT_BENCH_CLIENT: the rat-bench binary to run (default: the target dir's).
//
//   node bench/run.mjs [--quick] [--rounds N] [--duration S] [--connect-timeout S]
//                      [--only a,b] [--scenario a,b]
//                      [--no-build] [--docs] [--nice=-5] [--report bench/results/<file>.json]

import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import os from 'node:os'
import { parseArgs } from 'node:util'
import { runOptions, scenarios as allScenarios, servers as allServers, serves } from './lib/catalog.mjs'
import { machineBusyS, machineInfo, runClient, sampleTree, setNiceness, startServer, waitForQuiet } from './lib/proc.mjs'
import { readStats, startGroup } from './lib/redis.mjs'
import { median, writeReport } from './lib/report.mjs'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const MiB = 1 << 20
const SERVER_CPU = 0
const CLIENT_CPU = 1
const BENCH_CPUS = [SERVER_CPU, CLIENT_CPU]
/**
 * Other processes' share of the two CPUs (in cores, host steal included) past which a run
 * is run again. 0.3: at 0.4-0.5 a server pinned to a CPU shared with that load lost a third
 * of its requests/s (2026-11-22 11:05 run, /hello), enough to flip a ratio.
 */
const MAX_OTHER_LOAD = 0.3
/** Times a noisy run is run again. */
const RERUNS = 2

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    'connect-timeout': { type: 'string' },
    only: { type: 'string' },
    scenario: { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    docs: { type: 'boolean', default: false },
    report: { type: 'string' },
    nice: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})

if (flags.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(8, 12).join('\n').replaceAll('// ', ''))
  process.exit(0)
}

// CARGO_TARGET_DIR is honoured as cargo itself does; by default ./target.
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target')
const ratBench = process.env.RAT_BENCH_CLIENT ? resolve(process.env.RAT_BENCH_CLIENT) : join(targetDir, 'release', 'rat-bench')
const list = (s) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : null)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function build() {
  console.log('> cargo build --release -p rat-bench')
  execFileSync('cargo', ['build', '--release', '-p', 'rat-bench'], { cwd: root, stdio: 'inherit' })
  const peers = join(root, 'bench', 'peers')
  if (!existsSync(join(peers, 'node_modules'))) {
    console.log('> npm ci (bench/peers)')
    try {
      execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: peers, stdio: 'inherit' })
    } catch {
      console.warn('bench/peers: npm ci failed; the peers that need it will be skipped')
    }
  }
}

/**
 * The self-signed certificate every server gets in the TLS scenarios, made once per run by
 * `rat-bench cert` in bench/results/tls: the environment that hands it to a server.
 */
function certificate() {
  const dir = join(root, 'bench', 'results', 'tls')
  execFileSync(ratBench, ['cert', dir], { cwd: root })
  return { TLS_CERT: join(dir, 'cert.pem'), TLS_KEY: join(dir, 'key.pem') }
}

/**
 * CPU seconds and RSS of a server handle: one process tree, or (a Redis group) the sum over
 * its processes.
 */
function sampleOf(handle) {
  if (!handle.pids) return sampleTree(handle.pid)
  const xs = handle.pids.map(sampleTree)
  return { cpuS: xs.reduce((a, x) => a + x.cpuS, 0), rss: xs.reduce((a, x) => a + x.rss, 0), at: xs[0].at }
}

/** Flat numbers the report uses, from the client's JSON and the server samples. */
function metrics(scenario, client, samples, peakRss, stats, grouped = false) {
  const start = samples['measure-start']
  const end = samples['measure-end']
  const base = samples.base
  const m = {}
  for (const k of ['requests_per_s', 'events_per_s', 'messages_per_s', 'streams_per_s', 'bytes_per_s', 'gib_per_s', 'publishes_per_s', 'delivery_ratio',
    'gaps', 'subscribers_with_gaps', 'connected', 'connect_s', 'lost', 'errors', 'out_of_order', 'unparsable', 'clock_skew']) {
    if (typeof client[k] === 'number') m[k] = client[k]
  }
  if (typeof client.all_connected === 'boolean') m.all_connected = client.all_connected
  if (client.finished === false) m.unfinished = true
  if (client.latency) {
    m.latency_p50_ms = client.latency.p50_ms
    m.latency_p99_ms = client.latency.p99_ms
    m.latency_max_ms = client.latency.max_ms
  }
  if (client.arrival_latency) {
    m.arrival_p50_ms = client.arrival_latency.p50_ms
    m.arrival_p99_ms = client.arrival_latency.p99_ms
  }
  if (client.events_per_s > 0 && typeof client.bytes_per_s === 'number') m.bytes_per_event = client.bytes_per_s / client.events_per_s
  if (start && end) {
    const window = (end.at - start.at) / 1000
    // The runner's window should match the client's; if not, the runner read markers late.
    m.window_skew_s = window - client.duration_s
    const cpuS = end.cpuS - start.cpuS
    m.server_cpu_util = cpuS / window
    m.client_cpu_util = (end.client.cpuS - start.client.cpuS) / window
    // A Redis group's redis-server: part of the run, not noise.
    if (end.redis) m.redis_cpu_util = (end.redis.cpuS - start.redis.cpuS) / window
    // Whatever else ran on the two CPUs meanwhile (a shared machine): noise to be aware of.
    m.other_cpu_util = Math.max(0, (end.machineS - start.machineS) / window - m.server_cpu_util - m.client_cpu_util - (m.redis_cpu_util ?? 0))
    const units = scenario.per === 'MiB' ? client.bytes / MiB : client[scenario.per]
    if (scenario.per && units > 0) m.server_cpu_us_per_unit = (cpuS * 1e6) / units
    m.rss_end_mib = end.rss / MiB
  }
  // What the publishing process says it published in the window (GET /stats).
  if (stats?.start?.atNs && stats?.end?.atNs) {
    m.published_per_s = (stats.end.published - stats.start.published) / (Number(stats.end.atNs - stats.start.atNs) / 1e9)
    m.rejected = stats.end.rejected
  }
  // Subscribers per server process when the client spread them over several.
  if (client.per_addr?.length > 1) {
    m.process_subscribers_min = Math.min(...client.per_addr.map((a) => a.connected))
    m.process_subscribers_max = Math.max(...client.per_addr.map((a) => a.connected))
  }
  m.rss_base_mib = base.rss / MiB
  m.rss_peak_mib = peakRss / MiB
  // Not for a Redis group: the RSS of its several Node processes moved by more than the
  // subscribers add (-1,336 B per subscriber in bench/results/2026-12-06T16-50-58-536Z).
  if (scenario.subscribers && client.connected > 0 && end && !grouped) {
    m.rss_per_connection_bytes = (end.rss - base.rss) / client.connected
  }
  return m
}

/** What a failed run records: the error's message, cut to a readable length. */
const errorText = (err) => String(err.message ?? err).slice(0, 2000)

async function runOne(server, scenario, round, port, opts) {
  const record = { server: server.name, scenario: scenario.name, round, port }
  let handle
  try {
    record.busyBefore = await waitForQuiet(BENCH_CPUS, { maxMs: opts.quietWaitMs })
    // A TLS scenario hands the server the run's certificate (see `certificate`).
    const env = scenario.tls ? { ...server.env, ...opts.tlsEnv } : server.env
    // A group (server.group in a scenario with `cluster`): the subscribers' processes
    // on the server's CPU, redis-server and a separate publisher on the client's (placed
    // with the server, they made the 10k p99 worse: docs/redis.md).
    handle = server.group && scenario.cluster
      ? await startGroup({ ...server, env }, scenario, { cpu: SERVER_CPU, sideCpu: CLIENT_CPU, port })
      : await startServer({ ...server, env }, { cpu: SERVER_CPU, port, pubMs: scenario.pubMs })
    await sleep(500) // let start-up work (JIT, first GC) settle before the baseline
    const samples = { base: sampleOf(handle) }
    let peakRss = samples.base.rss
    const ticker = setInterval(() => {
      peakRss = Math.max(peakRss, sampleOf(handle).rss)
    }, 250)
    // A server variant may ask for more client options (request headers) in a scenario.
    const args = [...scenario.args, ...(server.clientArgs?.[scenario.name] ?? [])].map(String)
    const cmd = [ratBench, ...args, '--addr', handle.addrs?.join(',') ?? `127.0.0.1:${port}`]
    // `scenario.stats`: the publisher's counts at the window's edges.
    const stats = {}
    const timeoutMs = (opts.connectTimeout + opts.warmup + Math.max(opts.duration, 120) + 60) * 1000
    try {
      record.client = await runClient(cmd, {
        cpu: CLIENT_CPU,
        cwd: root,
        timeoutMs,
        onPhase: (name, clientPid) => {
          samples[name] = { ...sampleOf(handle), client: sampleTree(clientPid), machineS: machineBusyS(BENCH_CPUS) }
          if (handle.redisPid) samples[name].redis = sampleTree(handle.redisPid)
          if (handle.pids) samples[name].each = handle.pids.map(sampleTree)
          if (scenario.stats && name.startsWith('measure-')) stats[name.slice(8)] = readStats(handle.statsPort ?? port).catch((err) => ({ error: String(err.message ?? err) }))
        },
      })
      for (const k of Object.keys(stats)) stats[k] = await stats[k]
      // A server that died mid-run measured nothing: an error, with what it last said.
      const gone = handle.exited()
      if (gone !== null) throw new Error(`${server.name} exited (${gone}) during the run\n${handle.stderr.join('\n')}`)
      record.metrics = metrics(scenario, record.client, samples, peakRss, stats, !!handle.pids)
      // A Redis group: each process's share of a CPU over the window (subscribers first,
      // then the publisher if separate).
      const { 'measure-start': s0, 'measure-end': s1 } = samples
      if (s0?.each && s1?.each) {
        record.process_cpu_util = s1.each.map((x, k) => (x.cpuS - s0.each[k].cpuS) / ((x.at - s0.each[k].at) / 1000))
      }
    } finally {
      clearInterval(ticker)
    }
  } catch (err) {
    record.error = errorText(err)
  } finally {
    await handle?.stop()
  }
  return record
}

/**
 * A scenario with `interleave: N` slices: every server is started at once (an idle one
 * costs nothing) and the client goes round them N times, one slice of the work each, each
 * pass starting one server later, so that the machine's drift and the run order fall on
 * every server alike. Gives one record per server, like `runOne`: the rate is the median
 * of its slices; CPU is read from /proc around each slice (a `fixedWork` scenario's whole
 * run, else the client's window), RSS after it; the slices are kept in `slices`.
 */
async function runInterleaved(servers, scenario, round, firstPort, opts) {
  const records = servers.map((server, k) => ({ server: server.name, scenario: scenario.name, round, port: firstPort + k }))
  const handles = []
  const busyBefore = await waitForQuiet(BENCH_CPUS, { maxMs: opts.quietWaitMs })
  try {
    for (const [k, server] of servers.entries()) {
      records[k].busyBefore = busyBefore
      try {
        const env = scenario.tls ? { ...server.env, ...opts.tlsEnv } : server.env
        handles[k] = await startServer({ ...server, env }, { cpu: SERVER_CPU, port: records[k].port, pubMs: scenario.pubMs })
      } catch (err) {
        records[k].error = errorText(err)
      }
    }
    await sleep(500)
    const live = [...servers.keys()].filter((k) => handles[k])
    const base = live.map((k) => sampleTree(handles[k].pid))
    const slices = live.map(() => [])
    const timeoutMs = (Math.max(opts.duration, 120) + 60) * 1000
    const cmd = (k) => [ratBench, ...scenario.args.map(String), '--addr', `127.0.0.1:${records[k].port}`]
    const client = (k, onPhase = () => {}) => runClient(cmd(k), { cpu: CLIENT_CPU, cwd: root, timeoutMs, onPhase })
    // One unmeasured slice each first: JIT warm-up and the first buffers.
    for (const k of live) {
      try {
        await client(k)
      } catch (err) {
        records[k].error = errorText(err)
      }
    }
    for (let pass = 0; pass < scenario.interleave; pass++) {
      for (let step = 0; step < live.length; step++) {
        const j = (step + pass) % live.length
        const k = live[j]
        if (records[k].error) continue
        // A fixed amount of work is timed from the client's start to its exit (the server is
        // idle otherwise); a rate, within the client's window markers, server and client alike.
        const s0 = sampleTree(handles[k].pid)
        const m0 = machineBusyS(BENCH_CPUS)
        const marks = {}
        try {
          const c = await client(k, (name, pid) => (marks[name] = { client: sampleTree(pid), server: sampleTree(handles[k].pid), machineS: machineBusyS(BENCH_CPUS) }))
          const s1 = sampleTree(handles[k].pid)
          const { 'measure-start': w0, 'measure-end': w1 } = marks
          // A marker read after the client exited finds no process: no client figure then.
          const clientS = w0 && w1 && w1.client.cpuS >= w0.client.cpuS && w1.client.at > w0.client.at ? w1.client.cpuS - w0.client.cpuS : undefined
          const [a, b] = scenario.fixedWork ? [s0, s1] : [w0?.server, w1?.server]
          if (!a || !b) throw new Error('the client gave no window markers')
          const window = (b.at - a.at) / 1000
          const serverS = b.cpuS - a.cpuS
          const machineS = scenario.fixedWork ? machineBusyS(BENCH_CPUS) - m0 : w1.machineS - w0.machineS
          slices[j].push({
            ...c,
            units: scenario.per === 'MiB' ? c.bytes / MiB : c[scenario.per],
            window_s: window,
            server_cpu_s: serverS,
            client_cpu_util: clientS === undefined ? undefined : clientS / ((w1.client.at - w0.client.at) / 1000),
            other_cpu_util: Math.max(0, (machineS - serverS - (clientS ?? 0)) / window),
            rss: s1.rss,
          })
        } catch (err) {
          records[k].error = errorText(err)
        }
      }
    }
    for (const [j, k] of live.entries()) {
      if (records[k].error) continue
      const done = slices[j]
      if (!done.length) {
        records[k].error = 'no slice ran'
        continue
      }
      const sum = (f) => done.reduce((a, x) => a + f(x), 0)
      const mid = (f) => {
        const xs = done.map(f).filter((x) => typeof x === 'number')
        return xs.length ? median(xs) : undefined
      }
      const bytes = sum((x) => x.bytes ?? 0)
      const seconds = sum((x) => x.duration_s)
      const cpuS = sum((x) => x.server_cpu_s)
      records[k].client = { slices: done.length, bytes, duration_s: seconds, errors: sum((x) => x.errors ?? 0) }
      records[k].slices = done.map((x) => ({ [scenario.metric]: x[scenario.metric], duration_s: x.duration_s, server_cpu_s: x.server_cpu_s, client_cpu_util: x.client_cpu_util, other_cpu_util: x.other_cpu_util }))
      records[k].metrics = {
        [scenario.metric]: mid((x) => x[scenario.metric]),
        gib_per_s: mid((x) => x.gib_per_s),
        errors: records[k].client.errors,
        server_cpu_util: cpuS / sum((x) => x.window_s),
        client_cpu_util: mid((x) => x.client_cpu_util),
        other_cpu_util: mid((x) => x.other_cpu_util),
        server_cpu_us_per_unit: (cpuS * 1e6) / sum((x) => x.units),
        rss_base_mib: base[j].rss / MiB,
        rss_end_mib: done.at(-1).rss / MiB,
        rss_peak_mib: Math.max(base[j].rss, ...done.map((x) => x.rss)) / MiB,
      }
      if (done.some((x) => x.finished === false)) records[k].metrics.unfinished = true
    }
  } finally {
    await Promise.all(handles.map((h) => h?.stop()))
  }
  return records
}

function summary(r, scenario) {
  if (r.error) return `ERROR ${r.error.split('\n')[0]}`
  const m = r.metrics
  const v = m[scenario.metric]
  const parts = [`${scenario.metric}=${v === undefined ? '-' : Math.round(v).toLocaleString('en-US')}`]
  if (m.latency_p99_ms !== undefined) parts.push(`p99=${m.latency_p99_ms}ms`)
  if (m.arrival_p99_ms !== undefined) parts.push(`arrival p99=${m.arrival_p99_ms}ms`)
  if (m.gaps !== undefined) parts.push(`gaps=${m.gaps}`)
  if (m.connected !== undefined) parts.push(`connected=${m.connected} in ${m.connect_s}s`)
  if (m.server_cpu_util !== undefined) parts.push(`srv cpu=${(m.server_cpu_util * 100).toFixed(0)}%`)
  if (m.client_cpu_util !== undefined) parts.push(`cli cpu=${(m.client_cpu_util * 100).toFixed(0)}%`)
  if (m.other_cpu_util > 0.1) parts.push(`other load=${(m.other_cpu_util * 100).toFixed(0)}%`)
  if (m.errors) parts.push(`errors=${m.errors}`)
  return parts.join(' ')
}

async function main() {
  if (flags.report) {
    const results = JSON.parse(readFileSync(resolve(flags.report), 'utf8'))
    writeReport(results, root, relative(root, resolve(flags.report)))
    return
  }
  const opts = runOptions(flags.quick)
  if (flags.rounds) opts.rounds = Math.max(1, Number(flags.rounds))
  if (flags.duration) opts.duration = Math.max(1, Number(flags.duration))
  if (flags['connect-timeout']) opts.connectTimeout = Math.max(1, Number(flags['connect-timeout']))
  if (flags.nice) {
    setNiceness(Number(flags.nice))
    // The runner too: starved, it would read the client's window markers late.
    os.setPriority(Number(flags.nice))
  }
  opts.nice = Number(flags.nice ?? 0)
  opts.maxOtherLoad = MAX_OTHER_LOAD
  opts.reruns = RERUNS
  opts.rotate = true // see the round loop below
  if (!flags['no-build']) build()

  const only = list(flags.only)
  const wanted = list(flags.scenario)
  const servers = allServers({ root, targetDir }).filter((s) => !only || only.includes(s.name))
  const scenarios = allScenarios(opts).filter((s) => !wanted || wanted.includes(s.name))
  if (!servers.length || !scenarios.length) throw new Error('nothing to run: check --only / --scenario')
  if (scenarios.some((s) => s.tls)) opts.tlsEnv = certificate()
  const skipped = {}
  const ready = servers.filter((s) => {
    const why = s.available()
    if (why) skipped[s.name] = why
    return !why
  })
  for (const [name, why] of Object.entries(skipped)) console.log(`skip ${name}: ${why}`)

  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `${stamp}${flags.quick ? '-quick' : ''}.json`)
  const results = {
    startedAt: new Date().toISOString(),
    quick: flags.quick,
    machine: machineInfo(),
    options: opts,
    servers: servers.map(({ name, label, ours, floor }) => ({ name, label, ours: !!ours, floor: !!floor })),
    scenarios: scenarios.map(({ name, title, metric, unit, per, lowerIsBetter, subscribers, warmup, interleave, tls }) => ({ name, title, metric, unit, per, lowerIsBetter, subscribers, warmup, interleave, tls })),
    skipped,
    runs: [],
    discarded: [],
  }
  // A fresh port per run: no run meets the previous server's TIME_WAIT sockets.
  let port = 4100 + Math.floor(Math.random() * 1000)
  for (let round = 1; round <= opts.rounds; round++) {
    // Each round starts one server later: the machine's drift (it is shared) does not
    // always fall on the same place in the order.
    const order = ready.map((_, k) => ready[(k + round - 1) % ready.length])
    for (const scenario of scenarios) {
      const fit = order.filter((server) => serves(server, scenario))
      if (scenario.interleave) {
        for (const r of await runInterleaved(fit, scenario, round, port, opts)) {
          results.runs.push(r)
          console.log(`[${round}/${opts.rounds}] ${scenario.name.padEnd(20)} ${r.server.padEnd(11)} ${summary(r, scenario)} (median of ${r.slices?.length ?? 0} slices)`)
        }
        port += fit.length
        writeFileSync(file, JSON.stringify(results, null, 1))
        continue
      }
      for (const server of fit) {
        // A run during which other processes took more than MAX_OTHER_LOAD of the two CPUs
        // measured the neighbours as much as the server: it is kept in `discarded` and run
        // again (at most RERUNS times; the last one counts whatever its load).
        for (let attempt = 0; ; attempt++) {
          const r = await runOne(server, scenario, round, port, opts)
          port += scenario.cluster ? 4 : 1 // a Redis group takes a port per process
          const noisy = (r.metrics?.other_cpu_util ?? 0) > MAX_OTHER_LOAD && attempt < RERUNS
          ;(noisy ? results.discarded : results.runs).push(r)
          console.log(`[${round}/${opts.rounds}] ${scenario.name.padEnd(20)} ${server.name.padEnd(11)} ${summary(r, scenario)}${noisy ? ' (other load: discarded, run again)' : ''}`)
          writeFileSync(file, JSON.stringify(results, null, 1)) // kept current: a crash loses one run
          if (!noisy) break
        }
      }
    }
  }
  results.finishedAt = new Date().toISOString()
  writeFileSync(file, JSON.stringify(results, null, 1))
  console.log(`results: ${relative(root, file)}`)
  if (!flags.quick || flags.docs) writeReport(results, root, relative(root, file))
  else console.log('quick run: docs/benchmarks.md left alone (pass --docs to write it)')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
