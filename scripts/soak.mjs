#!/usr/bin/env node
// `npm run soak`: the reliability suite at full scale (docs/reliability.md). The same code
// runs CI-sized in `npm test`; here with the sizes below:
//
//   node scripts/soak.mjs [--minutes 10] [--subscribers 10000] [--rate 10]
//                         [--reconnects-per-s 20] [--cycles 200000] [--fuzz-cases 1000000]
//                         [--fuzz-wire-cases 250000] [--race-seeds 2000]
//                         [--only fuzz,races,soak,churn,faults] [--no-build]
//
// fuzz:   the engine's property tests (request heads, router, SSE framer, chunked bodies,
//         pipelining across the hand-over) with that many cases each, in a release build
// races:  the channel's randomized race test with that many seeds
// soak:   N subscribers to a channel published at `rate`/s for `minutes`, reconnects
//         resuming from Last-Event-ID; every event checked per subscriber; server RSS slope
// churn:  connect / subscribe / leave cycles over every stream kind, and WebSocket cycles
//         (a tenth as many); counters back at rest, every handler's finally and every
//         close handler once, RSS growth
// faults: faults.test.ts and shutdown.test.ts at full scale (RAT_SCALE=full)
//
// Prints each part's figures and a summary; writes them to target/soak/<time>.json; exits 1
// if a check failed.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { churn, hardNofile, ratBench, root, soak, wsChurn } from './soak/lib.mjs'

const { values: flags } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    subscribers: { type: 'string', default: '10000' },
    rate: { type: 'string', default: '10' },
    'reconnects-per-s': { type: 'string', default: '20' },
    cycles: { type: 'string', default: '200000' },
    'fuzz-cases': { type: 'string', default: '1000000' },
    'fuzz-wire-cases': { type: 'string', default: '250000' },
    'race-seeds': { type: 'string', default: '2000' },
    only: { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})
if (flags.help) {
  console.log('usage: npm run soak -- [--minutes M] [--subscribers N] [--rate R] [--reconnects-per-s R] [--cycles C]')
  console.log('                        [--fuzz-cases N] [--fuzz-wire-cases N] [--race-seeds N] [--only fuzz,races,soak,churn,faults] [--no-build]')
  process.exit(0)
}
const parts = flags.only ? flags.only.split(',').map((s) => s.trim()) : ['fuzz', 'races', 'soak', 'churn', 'faults']
const num = (k) => Number(flags[k])
const report = { started: new Date().toISOString(), command: `npm run soak -- ${process.argv.slice(2).join(' ')}`.trim(), nofile: hardNofile(), parts: {} }
const failures = []
const check = (part, what, ok) => {
  if (!ok) failures.push(`${part}: ${what}`)
  return ok
}
const log = (line) => console.log(`  ${line}`)
const seconds = (t0) => Math.round((performance.now() - t0) / 100) / 10

function cargoTest(args, env) {
  const t0 = performance.now()
  const r = spawnSync('cargo', ['test', '--release', '-p', 'rat-engine', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 26,
  })
  const passed = [...r.stdout.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)].reduce((a, m) => [a[0] + Number(m[1]), a[1] + Number(m[2])], [0, 0])
  const tests = [...r.stdout.matchAll(/^test (\S+) \.\.\. (\w+)/gm)].map((m) => `${m[1]} ${m[2]}`)
  return { ok: r.status === 0, passed: passed[0], failed: passed[1], tests, s: seconds(t0), out: r.status === 0 ? '' : r.stdout.slice(-4000) }
}

if (!flags['no-build']) {
  console.log('> npm run build')
  execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' })
}

if (parts.includes('fuzz')) {
  const cases = num('fuzz-cases')
  const wire = num('fuzz-wire-cases')
  console.log(`\n== fuzz: ${cases} cases per in-process property, ${wire} per property over loopback`)
  const env = { RAT_FUZZ_CASES: String(cases), RAT_FUZZ_WIRE_CASES: String(wire) }
  const inCrate = cargoTest(['--lib', 'fuzz'], env)
  const framer = cargoTest(['--test', 'sse_roundtrip'], env)
  const hostile = cargoTest(['--test', 'hostile_input'], env)
  for (const [name, r] of Object.entries({ inCrate, framer, hostile })) {
    log(`${name}: ${r.passed} passed, ${r.failed} failed in ${r.s} s`)
    for (const t of r.tests) log(`  ${t}`)
    if (r.out) console.log(r.out)
    check('fuzz', `${name} failed`, r.ok)
  }
  report.parts.fuzz = { cases, wireCases: wire, inCrate, framer, hostile }
}

if (parts.includes('races')) {
  const seeds = num('race-seeds')
  console.log(`\n== races: ${seeds} seeds`)
  const r = cargoTest(['--lib', 'channel::races'], { RAT_RACE_SEEDS: String(seeds) })
  log(`${r.passed} passed, ${r.failed} failed in ${r.s} s`)
  if (r.out) console.log(r.out)
  check('races', 'the race test failed', r.ok)
  report.parts.races = { seeds, ...r }
}

const bin = parts.some((p) => ['soak', 'churn', 'faults'].includes(p)) ? ratBench({ release: true }) : ''

if (parts.includes('soak')) {
  const subscribers = num('subscribers')
  const secs = num('minutes') * 60
  console.log(`\n== soak: ${subscribers} subscribers, ${num('minutes')} min, ${num('rate')} publishes/s, ${num('reconnects-per-s')} reconnects/s`)
  const t0 = performance.now()
  const r = await soak({
    bin,
    subscribers,
    seconds: secs,
    rate: num('rate'),
    reconnectsPerS: num('reconnects-per-s'),
    warmupS: Math.min(60, secs / 4),
    log,
  })
  const c = r.client
  log(`connected ${c.connected}/${subscribers} in ${c.connect_s} s; ${c.final_n} published; ${c.events} events received of ${c.events_owed} owed`)
  log(`lost ${c.lost}, duplicated ${c.duplicated}, out of order ${c.out_of_order}, corrupt ${c.corrupt}, missed notices ${c.missed_notices}`)
  log(`reconnects ${c.reconnects} (replayed ${r.server.channels.soak.replayed} events), closed by the server ${c.server_closed}, complete ${c.subscribers_complete}/${subscribers}`)
  const rss = r.rss
  const growth = rss.slopeMiBPerMin * (rss.steadyWindowS / 60)
  log(`server RSS: ${rss.atConnectedMiB.toFixed(1)} MiB when connected, ${rss.steadyFirstMiB.toFixed(1)} → ${rss.steadyLastMiB.toFixed(1)} MiB over the ${Math.round(rss.steadyWindowS)} s after warm-up, slope ${rss.slopeMiBPerMin.toFixed(3)} MiB/min, peak ${rss.peakMiB.toFixed(1)} MiB`)
  log(`server CPU ${r.serverCpuS.toFixed(1)} s over the run; ${seconds(t0)} s in all`)
  for (const k of ['lost', 'duplicated', 'out_of_order', 'corrupt', 'missed_notices', 'server_closed', 'connect_failed', 'bad_status']) check('soak', `${k} = ${c[k]}`, c[k] === 0)
  check('soak', `${c.subscribers_complete}/${subscribers} complete`, c.subscribers_complete === subscribers)
  check('soak', 'server not at rest after the client left', r.atRest)
  check('soak', `RSS grew ${growth.toFixed(1)} MiB after warm-up (over 5%)`, growth < 0.05 * rss.steadyFirstMiB)
  report.parts.soak = { subscribers, minutes: num('minutes'), rate: num('rate'), reconnectsPerS: num('reconnects-per-s'), ...r, rssGrowthMiB: growth }
}

if (parts.includes('churn')) {
  const cycles = num('cycles')
  console.log(`\n== churn: ${cycles} cycles`)
  const t0 = performance.now()
  // Growth counted from 30% of the cycles: by then V8's heap has grown to its working size
  // (a one-time cost; a leak keeps growing with the cycles).
  const r = await churn({ bin, cycles, warmupFraction: 0.3, log })
  const c = r.client
  const k = r.server.counts
  log(`${c.cycles} cycles in ${c.duration_s} s (${c.cycles_per_s}/s): ${c.answered} answered, ${c.early_closed} left early, ${c.failed} failed`)
  log(`at rest: ${r.atRest} (connections ${r.server.metrics.activeConnections}, streams ${r.server.metrics.activeStreams}, channel subscribers ${r.server.channels.churn.subscribers})`)
  log(`handlers started ${k.started}, finally ran ${k.finished}, twice ${k.finallyTwice}`)
  log(`server RSS after a full GC: ${r.rss.warmMiB.toFixed(1)} MiB after 30% of the cycles, ${r.rss.endMiB.toFixed(1)} MiB at the end: ${(r.rss.growth * 100).toFixed(1)}%; JS heap used ${r.rss.heapUsedWarmMiB.toFixed(1)} → ${r.rss.heapUsedEndMiB.toFixed(1)} MiB`)
  log(`  per tenth of the cycles (RSS, heap used, heap total MiB): ${r.rss.series.map((x) => `${x[0]}%: ${x[1]}/${x[2]}/${x[3]}`).join(', ')}; ${seconds(t0)} s in all`)
  check('churn', `${c.failed} cycles failed`, c.failed === 0 && c.cycles === cycles)
  check('churn', 'server not at rest', r.atRest)
  check('churn', `finally ran ${k.finished} times for ${k.started} handlers (${k.finallyTwice} twice)`, k.started === k.finished && k.finallyTwice === 0)
  check('churn', `RSS grew ${(r.rss.growth * 100).toFixed(1)}%`, r.rss.growth < 0.1)
  report.parts.churn = { cycles, ...r }

  // WebSockets: a tenth as many cycles (each is a full upgrade, echo and close).
  const wsCycles = Math.max(1000, Math.round(cycles / 10))
  const t1 = performance.now()
  const w = await wsChurn({ cycles: wsCycles, warmupFraction: 0.3 })
  const wc = w.client
  const s = w.server.ws
  log(`ws: ${wc.cycles} cycles in ${seconds(t1)} s: ${wc.cut} cut, ${wc.closed} closed, ${wc.afterEvent} closed after a channel event, ${wc.failed} failed ${wc.errors.join('; ')}`)
  log(`ws: at rest: ${w.atRest}; opened ${s.opened}, close handlers ${s.closed} (${s.closedTwice} twice), ${s.messages} echoed; RSS after a full GC ${w.rss.warmMiB.toFixed(1)} → ${w.rss.endMiB.toFixed(1)} MiB: ${(w.rss.growth * 100).toFixed(1)}%`)
  check('churn', `ws: ${wc.failed} cycles failed`, wc.failed === 0 && wc.cycles === wsCycles)
  check('churn', 'ws: server not at rest', w.atRest)
  check('churn', `ws: ${s.closed} close handlers for ${s.opened} sockets (${s.closedTwice} twice)`, s.opened === wsCycles && s.closed === s.opened && s.closedTwice === 0)
  check('churn', `ws: RSS grew ${(w.rss.growth * 100).toFixed(1)}%`, w.rss.growth < 0.1)
  report.parts.wsChurn = { cycles: wsCycles, ...w }
}

if (parts.includes('faults')) {
  console.log('\n== faults and shutdown at full scale (RAT_SCALE=full)')
  const t0 = performance.now()
  const r = spawnSync('sh', ['-c', `ulimit -n ${hardNofile()} && exec "$0" "$@"`, process.execPath, 'node_modules/vitest/vitest.mjs', 'run', '__test__/faults.test.ts', '__test__/shutdown.test.ts'], {
    cwd: root,
    env: { ...process.env, RAT_SCALE: 'full' },
    stdio: 'inherit',
  })
  log(`${r.status === 0 ? 'passed' : 'failed'} in ${seconds(t0)} s`)
  check('faults', 'vitest failed', r.status === 0)
  report.parts.faults = { ok: r.status === 0, s: seconds(t0) }
}

report.failures = failures
const dir = join(root, 'target', 'soak')
mkdirSync(dir, { recursive: true })
const file = join(dir, `${report.started.replace(/[:.]/g, '-')}.json`)
writeFileSync(file, JSON.stringify(report, null, 2))
console.log(`\n${failures.length === 0 ? 'all checks passed' : `${failures.length} checks failed:\n  ${failures.join('\n  ')}`} (report: ${file})`)
process.exit(failures.length === 0 ? 0 : 1)
