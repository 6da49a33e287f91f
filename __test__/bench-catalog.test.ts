// The bench's TLS, Redis and compression wiring (bench/lib): which server runs in which
// scenario, the scenarios RAT_BENCH_TLS=1 and RAT_BENCH_REDIS=1 add, and their targets,
// which compare across scenarios or servers and appear only when their scenario ran.
import { afterEach, describe, expect, it, vi } from 'vitest'

type Server = { name: string; plain?: boolean; tls?: string[]; env?: Record<string, string> }
type Scenario = { name: string; tls?: string; args: unknown[]; cluster?: { subscribers: number; publisher: boolean } }

async function load(tls: boolean, redis = false) {
  vi.resetModules()
  vi.stubEnv('RAT_BENCH_TLS', tls ? '1' : '')
  vi.stubEnv('RAT_BENCH_REDIS', redis ? '1' : '')
  // Plain JS modules without declarations: imported by a computed path, typed below.
  const lib = (name: string) => new URL(`../bench/lib/${name}.mjs`, import.meta.url).href
  const catalog = await import(lib('catalog'))
  const targets = await import(lib('targets'))
  const opts = catalog.runOptions(true)
  return {
    servers: catalog.servers({ root: '/nowhere', targetDir: '/nowhere' }) as Server[],
    scenarios: catalog.scenarios(opts) as Scenario[],
    serves: catalog.serves as (s: Server, sc: Scenario) => boolean,
    targetRows: targets.targetRows as (
      stats: unknown,
      ours: string,
      labels: Record<string, string>,
      fmt: (v: number) => string,
      opts?: { measuredOnly?: boolean },
    ) => string,
  }
}

afterEach(() => {
  vi.unstubAllEnvs()
})

describe('bench catalog', () => {
  it('adds the TLS scenarios and the HTTP/2 peer only with RAT_BENCH_TLS', async () => {
    const plain = await load(false)
    expect(plain.scenarios.some((s) => s.tls)).toBe(false)
    expect(plain.servers.map((s) => s.name)).not.toContain('node-http2')

    const { scenarios, servers, serves } = await load(true)
    const byName = Object.fromEntries(scenarios.map((s) => [s.name, s]))
    expect(byName['hello-tls'].args).toEqual(expect.arrayContaining(['--tls', 'http1']))
    expect(byName['broadcast-10k-100ms-h2'].args).toEqual(expect.arrayContaining(['--tls', 'h2', '--streams-per-conn', 100]))
    expect(byName['idle-10k-tls'].args).toEqual(expect.arrayContaining(['idle', '--tls', 'http1']))
    const run = (sc: string) => servers.filter((s) => serves(s, byName[sc])).map((s) => s.name)
    expect(run('broadcast-10k-100ms-h2')).toEqual(['rat-engine', 'node-http2'])
    expect(run('broadcast-10k-100ms-tls')).toEqual(['rat-engine', 'node-http', 'bun'])
    expect(run('broadcast-10k-100ms')).not.toContain('node-http2')
    expect(run('broadcast-10k-100ms')).toContain('floor')
    expect(servers.find((s) => s.name === 'node-http2')?.env).toEqual({ HTTP2: '1' })
  })

  it('checks the TLS targets against ours in plain HTTP/1.1 and against Bun, only when they ran', async () => {
    const { targetRows } = await load(true)
    const cell = (med: Record<string, number>) => ({ med })
    const plainOnly = {
      'broadcast-10k-100ms': { 'rat-engine': cell({ arrival_p99_ms: 80, latency_p99_ms: 90 }) },
    }
    expect(targetRows(plainOnly, 'rat-engine', {}, String)).not.toContain('TLS')

    const stats = {
      ...plainOnly,
      'broadcast-10k-100ms-tls': {
        'rat-engine': cell({ arrival_p99_ms: 100, latency_p99_ms: 180, server_cpu_us_per_unit: 9, connected: 10_000, gaps: 0 }),
        bun: cell({ server_cpu_us_per_unit: 10 }),
      },
      'idle-10k-tls': { 'rat-engine': cell({ rss_per_connection_bytes: 12_000 }) },
    }
    const rows = targetRows(stats, 'rat-engine', { bun: 'Bun.serve' }, String).split('\n')
    const row = (needle: string) => rows.find((r) => r.includes(needle)) ?? ''
    // On arrival 100 / 80 ms: within 1.3x; when the client reads (180 / 90 ms) only reported.
    expect(row('TLS 10k @100 ms (HTTP/1.1): p99 latency on arrival')).toMatch(/1\.25×.*✅ met/)
    expect(row('TLS 10k @100 ms (HTTP/1.1): p99 latency when the client reads')).toMatch(/2\.00×.*info/)
    expect(row('TLS 10k @100 ms (HTTP/1.1): server CPU')).toMatch(/0\.90×.*✅ met/)
    expect(row('idle subscriber RSS (HTTP/1.1')).toContain('❌ missed')
    // h2 and /hello over TLS did not run: no rows.
    expect(rows.some((r) => r.includes('(h2)') || r.includes('/hello over TLS'))).toBe(false)
  })

  it('adds the Redis scenarios, run by ours alone and as a Redis group, only with RAT_BENCH_REDIS', async () => {
    const plain = await load(false)
    expect(plain.scenarios.some((s) => s.name.startsWith('redis-'))).toBe(false)
    expect(plain.servers.map((s) => s.name)).not.toContain('rat-engine-redis')

    const { scenarios, servers, serves } = await load(false, true)
    const byName = Object.fromEntries(scenarios.map((s) => [s.name, s]))
    const run = (sc: string) => servers.filter((s) => serves(s, byName[sc])).map((s) => s.name)
    expect(run('redis-broadcast-10k-100ms')).toEqual(['rat-engine', 'rat-engine-redis', 'rat-engine-split'])
    expect(run('redis-publish-rate')).toEqual(['rat-engine', 'rat-engine-redis'])
    expect(run('broadcast-10k-100ms')).not.toContain('rat-engine-redis')
    expect(run('broadcast-10k-100ms')).not.toContain('rat-engine-split')
    expect(byName['redis-broadcast-10k-100ms'].cluster).toMatchObject({ subscribers: 2, publisher: true })
    expect(byName['redis-broadcast-10k-100ms'].args).toEqual(expect.arrayContaining(['--connections', 10_000]))
    expect(byName['redis-publish-rate'].cluster).toMatchObject({ subscribers: 1, publisher: false })
    expect(byName['redis-publish-rate'].args).toEqual(expect.arrayContaining(['--connections', 10]))
  })

  it('checks the Redis targets against ours with a local channel, only when they ran', async () => {
    const { targetRows } = await load(false, true)
    const cell = (med: Record<string, number>, max: Record<string, number> = {}) => ({ med, max })
    expect(targetRows({}, 'rat-engine', {}, String)).not.toContain('Redis')
    const stats = {
      'redis-broadcast-10k-100ms': {
        'rat-engine': cell({ arrival_p99_ms: 100, latency_p99_ms: 100 }),
        'rat-engine-redis': cell({ arrival_p99_ms: 101.5, latency_p99_ms: 130 }, { gaps: 0 }),
      },
      'redis-publish-rate': {
        'rat-engine': cell({ publishes_per_s: 200_000 }),
        'rat-engine-redis': cell({ publishes_per_s: 99_000 }, { gaps: 2 }),
      },
    }
    const rows = targetRows(stats, 'rat-engine', {}, String).split('\n')
    const row = (needle: string) => rows.find((r) => r.includes(needle)) ?? ''
    expect(row('processes: p99 latency on arrival vs the local channel')).toMatch(/\+1\.5 ms.*✅ met/)
    expect(row('processes: p99 latency when the client reads')).toMatch(/\+30\.0 ms.*info/)
    expect(row('Redis 10k @100 ms: gaps')).toContain('✅ met')
    expect(row('Redis publish rate: gaps')).toMatch(/\| 2 \|.*❌ missed/)
    expect(row('events/s each subscriber received')).toMatch(/99000.*❌ missed/)
    expect(row('vs the local channel (report only)')).toMatch(/0\.49×.*info/)
    stats['redis-broadcast-10k-100ms']['rat-engine-redis'].med.arrival_p99_ms = 102.5
    expect(targetRows(stats, 'rat-engine', {}, String)).toMatch(/\+2\.5 ms[^\n]*❌ missed/)
  })

  it('checks the WebSocket targets, the channel on arrival against our SSE, only when they ran', async () => {
    const { targetRows } = await load(false)
    const cell = (med: Record<string, number>) => ({ med, min: med, max: med })
    expect(targetRows({}, 'rat-engine', {}, String)).not.toContain('WebSocket')
    const stats = {
      'broadcast-10k-100ms': { 'rat-engine': cell({ arrival_p99_ms: 100, latency_p99_ms: 100 }) },
      'ws-broadcast-10k-100ms': { 'rat-engine': cell({ arrival_p99_ms: 108, latency_p99_ms: 300, connected: 10_000, gaps: 0 }) },
      'ws-echo': { 'rat-engine': cell({ messages_per_s: 90_000 }), 'node-http': cell({ messages_per_s: 40_000 }), bun: cell({ messages_per_s: 100_000 }) },
      'ws-idle-10k': { 'rat-engine': cell({ rss_per_connection_bytes: 1500 }) },
    }
    const rows = targetRows(stats, 'rat-engine', {}, String).split('\n')
    const row = (needle: string) => rows.find((r) => r.includes(needle)) ?? ''
    // On arrival 108 / 100 ms: within 1.1x; when the client reads (300 / 100 ms) only reported.
    expect(row('WebSocket 10k @100 ms: p99 latency on arrival vs our SSE')).toMatch(/1\.08×.*✅ met/)
    expect(row('WebSocket 10k @100 ms: p99 latency when the client reads')).toMatch(/3\.00×.*info/)
    expect(row('WebSocket 10k @100 ms: gaps')).toMatch(/✅ met/)
    expect(row('echo msg/s, 50 connections, vs `ws`')).toMatch(/2\.25×.*✅ met/)
    expect(row('echo msg/s, 50 connections, vs Bun')).toMatch(/0\.90×.*❌ missed/)
    expect(row('WebSocket: idle socket RSS')).toMatch(/✅ met/)
    stats['ws-broadcast-10k-100ms']['rat-engine'].med.arrival_p99_ms = 112
    expect(targetRows(stats, 'rat-engine', {}, String)).toMatch(/on arrival vs our SSE[^\n]*1\.12×[^\n]*❌ missed/)
  })

  it('checks the compression targets on arrival p99 only when both 2 KiB servers ran, and without our default server', async () => {
    const { targetRows } = await load(false)
    const cell = (med: Record<string, number>) => ({ med })
    const plain = { server_cpu_us_per_unit: 8, bytes_per_event: 2000, arrival_p99_ms: 100, latency_p99_ms: 100 }
    const gzip = { server_cpu_us_per_unit: 9, bytes_per_event: 500, arrival_p99_ms: 105, latency_p99_ms: 200 }
    const one = { 'broadcast-10k-100ms': { 'rat-engine-2k-gzip': cell(gzip) } }
    expect(targetRows(one, 'rat-engine', {}, String)).not.toContain('gzip channel')
    const both = { 'broadcast-10k-100ms': { 'rat-engine-2k-gzip': cell(gzip), 'rat-engine-2k': cell(plain) } }
    // Our default server did not run: only the rows that could be checked.
    const table = targetRows(both, 'rat-engine', {}, String, { measuredOnly: true })
    expect(table).not.toContain('not measured')
    const rows = table.split('\n')
    const row = (needle: string) => rows.find((r) => r.includes(needle)) ?? ''
    expect(row('10k @100 ms, 2 KiB events: server CPU per delivered event |')).toMatch(/1\.13×.*✅ met/)
    expect(row('bytes on the wire')).toMatch(/0\.25×.*✅ met/)
    expect(row('p99 on arrival')).toMatch(/1\.05×.*✅ met/)
    expect(row('p99 when the client reads')).toMatch(/2\.00×.*info/)
    both['broadcast-10k-100ms']['rat-engine-2k-gzip'].med.arrival_p99_ms = 115
    expect(targetRows(both, 'rat-engine', {}, String, { measuredOnly: true })).toMatch(/p99 on arrival[^\n]*1\.15×[^\n]*❌ missed/)
    expect(targetRows({}, 'rat-engine', {}, String, { measuredOnly: true })).toBe('')
  })
})
