// Turns a results file into docs/benchmarks.md and docs/benchmarks.svg: medians per server
// and scenario, ratios of ours against every other server, issue 6's targets checked, the
// machine and the method. A hand-written notes section between the NOTES markers survives
// regeneration.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { YOUNG_EVENTS } from './catalog.mjs'
import { barChart } from './chart.mjs'
import { targetRows } from './targets.mjs'

const NOTES_START = '<!-- notes:start (kept when the report is regenerated) -->'
const NOTES_END = '<!-- notes:end -->'

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** `stats[scenario][server]` = { runs, ok, errors, med, min, max, all } over the rounds. */
export function aggregate(results) {
  const stats = {}
  for (const r of results.runs) {
    const cell = ((stats[r.scenario] ??= {})[r.server] ??= { runs: 0, ok: 0, errors: [], values: {}, all: {} })
    cell.runs++
    if (r.error || !r.metrics) {
      cell.errors.push(r.error ?? 'no metrics')
      continue
    }
    cell.ok++
    for (const [k, v] of Object.entries(r.metrics)) {
      if (typeof v === 'number' && Number.isFinite(v)) (cell.values[k] ??= []).push(v)
      else if (typeof v === 'boolean') cell.all[k] = (cell.all[k] ?? true) && v
    }
  }
  for (const byServer of Object.values(stats)) {
    for (const cell of Object.values(byServer)) {
      cell.med = {}
      cell.min = {}
      cell.max = {}
      for (const [k, vs] of Object.entries(cell.values)) {
        cell.med[k] = median(vs)
        cell.min[k] = Math.min(...vs)
        cell.max[k] = Math.max(...vs)
      }
    }
  }
  return stats
}

/** Human units: 1.23M, 45.6k, 2.10 GiB/s, 1.5 KiB. */
export function fmt(v, unit) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–'
  if (unit === 'bytes/s') return `${(v / 2 ** 30).toFixed(2)} GiB/s`
  if (unit === 'bytes') return v >= 10240 ? `${(v / 1024).toFixed(1)} KiB` : `${Math.round(v).toLocaleString('en-US')} B`
  const a = Math.abs(v)
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`
  if (a >= 100) return Math.round(v).toLocaleString('en-US')
  if (a >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

/** ours vs other, oriented so that > 1 means ours is better. */
export function ratio(ours, other, lowerIsBetter) {
  if (!(ours > 0) || !(other > 0)) return undefined
  return lowerIsBetter ? other / ours : ours / other
}

const COLUMNS = [
  ['latency_p50_ms', 'p50 ms', (v) => fmt(v)],
  ['latency_p99_ms', 'p99 ms', (v) => fmt(v)],
  ['latency_max_ms', 'max ms', (v) => fmt(v)],
  ['arrival_p99_ms', 'arrival p99 ms', (v) => fmt(v)],
  ['bytes_per_event', 'bytes/event', (v) => fmt(v)],
  ['streams_per_s', 'streams/s', (v) => fmt(v)],
  ['publishes_per_s', 'publishes/s', (v) => fmt(v)],
  ['gaps', 'gaps (max)', null],
  ['delivery_ratio', 'delivered', (v) => v.toFixed(4)],
  ['published_per_s', 'published/s', (v) => fmt(v)],
  ['rejected', 'rejected', (v) => String(v)],
  ['process_subscribers_min', 'subscribers per process (min)', (v) => fmt(v)],
  ['process_subscribers_max', 'subscribers per process (max)', (v) => fmt(v)],
  ['connected', 'connected', (v) => fmt(v)],
  ['connect_s', 'connect s', (v) => v.toFixed(2)],
  ['server_cpu_util', 'server CPU', (v) => `${Math.round(v * 100)}%`],
  ['server_cpu_us_per_unit', 'server CPU µs per unit', (v) => (v < 10 ? v.toFixed(2) : v.toFixed(1))],
  ['rss_peak_mib', 'peak RSS MiB', (v) => v.toFixed(0)],
  ['rss_per_connection_bytes', 'RSS per conn', (v) => fmt(v, 'bytes')],
  ['client_cpu_util', 'client CPU', (v) => `${Math.round(v * 100)}%`],
  ['redis_cpu_util', 'redis-server CPU', (v) => `${Math.round(v * 100)}%`],
  ['other_cpu_util', 'other load', (v) => `${Math.round(v * 100)}%`],
]

function scenarioTable(sc, byServer, servers) {
  const present = servers.filter((s) => byServer?.[s.name])
  const cols = COLUMNS.filter(([k]) => k !== sc.metric && present.some((s) => byServer[s.name].med[k] !== undefined))
  const head = ['server', `${sc.unit} (median)`, 'rounds: min–max', ...cols.map(([, title]) => (title.includes('per unit') ? `server CPU µs/${sc.per ?? 'unit'}` : title)), 'errors']
  const rows = present.map((s) => {
    const c = byServer[s.name]
    const cells = cols.map(([k, , f]) => {
      if (k === 'gaps') return c.max.gaps === undefined ? '–' : String(c.max.gaps)
      return c.med[k] === undefined ? '–' : f(c.med[k])
    })
    const range = c.ok > 1 ? `${fmt(c.min[sc.metric], sc.unit)}–${fmt(c.max[sc.metric], sc.unit)}` : ''
    const errs = c.errors.length ? `${c.errors.length}/${c.runs}: ${c.errors[0].split('\n')[0].slice(0, 80)}` : ''
    const name = s.ours ? `**${s.label}**` : s.label
    return [name, fmt(c.med[sc.metric], sc.unit), range, ...cells, errs]
  })
  return [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n')
}

function ratioTable(results, stats, servers, ours) {
  const others = servers.filter((s) => !s.ours)
  const head = ['scenario', 'metric', ...others.map((s) => s.label)]
  const rows = results.scenarios.map((sc) => {
    const mine = stats[sc.name]?.[ours.name]?.med[sc.metric]
    return [sc.name, sc.unit + (sc.lowerIsBetter ? ' (lower is better)' : ''), ...others.map((s) => {
      const r = ratio(mine, stats[sc.name]?.[s.name]?.med[sc.metric], sc.lowerIsBetter)
      return r === undefined ? '–' : `${r.toFixed(2)}×`
    })]
  })
  const p99 = results.scenarios.filter((sc) => sc.name.startsWith('broadcast')).flatMap((sc) => [
    ['latency_p99_ms', 'p99 latency (lower is better)'],
    ['arrival_p99_ms', 'p99 latency on arrival (lower is better)'],
  ].map(([key, what]) => {
    const mine = stats[sc.name]?.[ours.name]?.med[key]
    return [sc.name, what, ...others.map((s) => {
      const r = ratio(mine, stats[sc.name]?.[s.name]?.med[key], true)
      return r === undefined ? '–' : `${r.toFixed(2)}×`
    })]
  }))
  return [head, head.map(() => '---'), ...rows, ...p99].map((r) => `| ${r.join(' | ')} |`).join('\n')
}

function chart(results, stats, servers) {
  const kind = (s) => (s.ours ? 'ours' : s.floor ? 'floor' : 'peer')
  const panel = (sc, key, unit, title) => ({
    title,
    rows: servers.map((s) => {
      const v = stats[sc.name]?.[s.name]?.med[key]
      return { label: s.label, value: v, text: fmt(v, unit), kind: kind(s) }
    }),
  })
  const panels = results.scenarios.map((sc) => panel(sc, sc.metric, sc.unit, `${sc.title}: ${sc.unit}${sc.lowerIsBetter ? ' (lower is better)' : ''}`))
  const b = results.scenarios.find((sc) => sc.name === 'broadcast-10k-100ms')
  if (b) panels.splice(results.scenarios.indexOf(b) + 1, 0, panel(b, 'latency_p99_ms', 'ms', `${b.title}: p99 latency ms (lower is better)`))
  return barChart(panels, `rat-engine vs peers, medians of ${results.options.rounds} round(s), ${results.machine.nproc} cores (${results.machine.cpuModel})`)
}

/** The scenarios whose warm-up is longer than the run's, as a parenthesis (or nothing). */
function longerWarmups(results) {
  const longer = results.scenarios.filter((s) => s.warmup > results.options.warmup)
  if (!longer.length) return ''
  const list = longer.map((s) => `${s.warmup} s for ${s.name}`).join(', ')
  return ` (a broadcast's window starts after its subscribers' first ${YOUNG_EVENTS} events, see bench/lib/catalog.mjs: ${list})`
}

/** How the interleaved scenarios ran, as a sentence (or nothing: older result files). */
function interleaved(results) {
  const names = results.scenarios.filter((s) => s.interleave).map((s) => `${s.name} (${s.interleave} slices)`)
  if (!names.length) return ''
  return `
  ${names.join(', ')}: every server is started at once (the others idle) and the client goes
  round them one slice at a time, each pass starting one server later; a round's figure is
  the median of its slices, and the server's CPU is read around each slice (/chunked's
  whole slice, a rate's window). The host's memory bandwidth, which /chunked measures as
  much as the server, drifts within a second here; /hello run once per server measured the
  server that ran first 5-15% slower, whichever it was. Slices a few seconds apart compare
  the servers under the same conditions.`
}

/** How the TLS scenarios ran, as list items (or nothing when none ran). */
function tlsMethod(results) {
  if (!results.scenarios.some((s) => s.tls)) return ''
  return `- TLS scenarios (\`RAT_BENCH_TLS=1\`): the runner makes one self-signed ECDSA P-256
  certificate (\`rat-bench cert\`) and every server serves it (TLS_CERT, TLS_KEY). The client
  is rustls with the \`ring\` provider, as the engine, with session resumption; ALPN offers
  one protocol only, \`http/1.1\` (a connection per subscriber) or \`h2\` (100 subscribers'
  streams per connection, the h2 crate). node:http is node:https there; the h2 peer is
  \`http2.createSecureServer\` with the same handler; Bun.serve has no HTTP/2 and runs the
  HTTP/1.1 ones only.
`
}

function method(results) {
  const o = results.options
  return `- Each server runs alone${results.scenarios.some((s) => s.interleave) ? ' (but see the interleaved scenarios below)' : ''}, pinned with \`taskset -c 0\` (our engine's tokio threads and its JS
  thread share that one core); the load client \`rat-bench\` (crates/bench, Rust, one thread,
  raw TCP with its own HTTP/SSE reader) runs on \`taskset -c 1\`. Every scenario runs every
  server in turn; that is repeated for ${o.rounds} round(s)${o.rotate ? ', each round starting one server later than the one before' : ''}, and the tables give medians.
- Windows: ${o.warmup} s warm-up${longerWarmups(results)}, then ${o.duration} s measured (the client prints markers; the
  runner reads the server's user+system CPU time and RSS from \`/proc\` at each, summed over
  the server's process tree). /chunked is a fixed amount of work, timed to the last byte.${interleaved(results)}
- SSE events are counted per the EventSource spec. Latency is publish-to-receive on
  CLOCK_MONOTONIC: the server stamps \`t\` at publish (\`process.hrtime.bigint()\`; Bun's
  hrtime is offset to the same clock), the client reads the clock once per \`read()\`
  (p99). "Arrival" is publish to the kernel's receive timestamp of the read's newest segment
  (SO_TIMESTAMPNS on every subscriber socket): when the bytes reached the client, without
  the time the one-core client took to get to them. Latency targets use arrival.
  Gaps are missing \`seq\` numbers per subscriber inside the window.
- The machine is shared: before each run the runner waits (up to ${Math.round((o.quietWaitMs ?? 0) / 1000)} s) for both
  CPUs to be nearly idle, and "other load" is the CPU other processes used on the two CPUs
  during the window (in cores). Rows with a high other load are noisy; a run with more
  than ${o.maxOtherLoad ?? 0.5} cores of other load is set aside (kept under \`discarded\` in the JSON) and run
  again, up to ${o.reruns ?? 2} times${results.discarded?.length ? ` (this run set aside ${results.discarded.length})` : ''}.${o.nice ? ` Servers and client ran at nice ${o.nice}.` : ''}
- Subscribers connect at most 256 at a time (a ramp, not a SYN flood) with a
  ${o.connectTimeout} s limit; "connect s" is until the last response head arrived.
  RSS per connection is (RSS after connecting and holding − RSS before) ÷ connections.
${tlsMethod(results)}- The floor (crates/bench, \`rat-floor\`) is a single-threaded mio server that formats each
  event once and \`send()\`s it to every subscriber: what one core of this machine allows.
- Peers are in bench/peers (own package.json): node:http by hand with 'drain'; fastify 5 +
  @fastify/sse; better-sse Channel on node:http; hono + @hono/node-server streamSSE (it
  writes one \`: connected\` comment so an idle stream's head goes out); Bun.serve via the
  \`bun\` npm package. All follow ../shared/BENCH-CONTRACT.md.`
}

function machine(results) {
  const m = results.machine
  return `| | |
| --- | --- |
| CPU | ${m.cpuModel}, ${m.nproc} cores visible (shared machine) |
| Kernel | ${m.kernel} |
| Memory | ${m.memTotalGiB} GiB |
| Node | ${m.node} |
| Rust | ${m.rustc} |
| Open files (hard) | ${m.nofileHard} |
| Run | ${results.startedAt} – ${results.finishedAt ?? '(unfinished)'} |`
}

/** Writes docs/benchmarks.md and docs/benchmarks.svg from `results`. */
export function writeReport(results, root, resultFile) {
  const stats = aggregate(results)
  const servers = results.servers.filter((s) => !results.skipped?.[s.name])
  const ours = servers.find((s) => s.ours)
  const docs = join(root, 'docs')
  mkdirSync(docs, { recursive: true })
  writeFileSync(join(docs, 'benchmarks.svg'), chart(results, stats, servers))

  const mdPath = join(docs, 'benchmarks.md')
  const old = existsSync(mdPath) ? readFileSync(mdPath, 'utf8') : ''
  const kept = old.includes(NOTES_START) && old.includes(NOTES_END)
    ? old.slice(old.indexOf(NOTES_START) + NOTES_START.length, old.indexOf(NOTES_END)).trim()
    : '_Profiling findings and what remains go here._'
  const skipped = Object.entries(results.skipped ?? {})
  const md = `# Benchmarks

Generated by \`npm run bench\` (bench/run.mjs) from \`${resultFile}\`; regenerate this page with
\`node bench/run.mjs --report ${resultFile}\`. Only the notes section is hand-written.
${results.quick ? '\n> **Quick smoke run** (`--quick`): short windows, one round. Not a measurement.\n' : ''}
![rat-engine vs peers](benchmarks.svg)

## Targets

${targetRows(stats, ours?.name ?? 'rat-engine', Object.fromEntries(results.servers.map((s) => [s.name, s.label])), fmt, { measuredOnly: !ours }) || '_Our server did not run._'}

## Ours against each server

Ratio of medians, oriented so that **> 1× means rat-engine is better** (for throughput
ours ÷ theirs; for RSS and latency theirs ÷ ours).

${ours ? ratioTable(results, stats, servers, ours) : '_Our server did not run._'}

## Results

${results.scenarios.map((sc) => `### ${sc.title}\n\n${scenarioTable(sc, stats[sc.name], servers)}`).join('\n\n')}
${skipped.length ? `\nSkipped: ${skipped.map(([n, why]) => `${n} (${why})`).join('; ')}.\n` : ''}
## Machine

${machine(results)}

## Method

${method(results)}

## Notes

${NOTES_START}
${kept}
${NOTES_END}
`
  writeFileSync(mdPath, md)
  console.log('wrote docs/benchmarks.md and docs/benchmarks.svg')
}
