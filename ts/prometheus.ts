// The Prometheus text exposition format (0.0.4) of the engine's and the channels' counters.
import type { EngineMetrics, NativeChannelMetrics } from './native.js'

type Kind = 'counter' | 'gauge'
/** The fields of `T` that hold one number. */
type NumberField<T> = { [K in keyof T]-?: T[K] extends number ? K : never }[keyof T]

const ENGINE: Array<[name: string, kind: Kind, field: NumberField<EngineMetrics>, help: string]> = [
  ['rat_connections_active', 'gauge', 'activeConnections', 'Connections open now.'],
  ['rat_connections_total', 'counter', 'totalConnections', 'Connections accepted.'],
  ['rat_requests_total', 'counter', 'totalRequests', 'Requests received.'],
  ['rat_streams_active', 'gauge', 'activeStreams', 'Streaming responses open now.'],
  ['rat_streams_total', 'counter', 'totalStreams', 'Streaming responses started.'],
  ['rat_events_sent_total', 'counter', 'eventsSent', 'SSE events queued to clients, channel fan-out included.'],
  ['rat_sent_bytes_total', 'counter', 'bytesSent', 'Response body bytes handed to connections.'],
  ['rat_rejected_requests_total', 'counter', 'rejectedRequests', 'Requests the engine answered with an error itself (404, 405, 408, 413, 414, 429, 431, 504...).'],
  ['rat_handler_errors_total', 'counter', 'handlerErrors', 'Handlers and hooks that threw or rejected (HttpError excluded).'],
  ['rat_dispatches_total', 'counter', 'dispatchCount', 'Calls into JS that carried a batch of requests and stream notices.'],
]

/** `rat_refusals_total{reason}`: what the engine's limits and timeouts refused. */
const REFUSALS: Array<[reason: string, field: NumberField<EngineMetrics>]> = [
  ['connection_limit', 'refusedConnections'],
  ['stream_limit', 'refusedStreams'],
  ['header_timeout', 'headerTimeouts'],
  ['body_timeout', 'bodyTimeouts'],
  ['handler_timeout', 'handlerTimeouts'],
  ['unauthorized', 'unauthorized'],
]

const CHANNEL: Array<[name: string, kind: Kind, field: keyof NativeChannelMetrics, help: string]> = [
  ['rat_channel_subscribers', 'gauge', 'subscribers', 'Subscribers of the channel now.'],
  ['rat_channel_published_total', 'counter', 'published', 'Events published to the channel.'],
  ['rat_channel_delivered_total', 'counter', 'delivered', 'Event copies handed to subscribers (written or queued).'],
  ['rat_channel_dropped_total', 'counter', 'dropped', 'Event copies dropped by the drop-oldest policy.'],
  ['rat_channel_replayed_total', 'counter', 'replayed', 'Event copies replayed from history.'],
  ['rat_channel_closed_slow_total', 'counter', 'closedSlow', 'Subscribers closed for falling behind.'],
]

/** A label value as the format writes it: backslash, double quote and line feed escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

const sample = (n: number): string => (Number.isFinite(n) ? String(n) : Number.isNaN(n) ? 'NaN' : n > 0 ? '+Inf' : '-Inf')

/** The text exposition of `engine` and of each `[name, metrics]` channel, one family after another. */
export function prometheusText(engine: EngineMetrics, channels: ReadonlyArray<readonly [string, NativeChannelMetrics]>): string {
  let out = ''
  for (const [name, kind, field, help] of ENGINE) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n${name} ${sample(engine[field])}\n`
  }
  out += '# HELP rat_dispatch_lag_seconds_total Time batches waited for the JS thread to take them (event-loop lag as the engine sees it).\n'
  out += '# TYPE rat_dispatch_lag_seconds_total counter\n'
  out += `rat_dispatch_lag_seconds_total ${sample(engine.dispatchLagMs / 1000)}\n`
  out += '# HELP rat_dispatch_lag_max_seconds The longest time a batch waited for the JS thread.\n'
  out += '# TYPE rat_dispatch_lag_max_seconds gauge\n'
  out += `rat_dispatch_lag_max_seconds ${sample(engine.dispatchLagMaxMs / 1000)}\n`
  out += '# HELP rat_responses_total Responses sent, by status class.\n'
  out += '# TYPE rat_responses_total counter\n'
  for (let i = 0; i < 5; i++) out += `rat_responses_total{class="${i + 1}xx"} ${sample(engine.responses[i] ?? 0)}\n`
  out += '# HELP rat_refusals_total Connections, streams and requests refused by a limit or timeout, by reason.\n'
  out += '# TYPE rat_refusals_total counter\n'
  for (const [reason, field] of REFUSALS) out += `rat_refusals_total{reason="${reason}"} ${sample(engine[field])}\n`
  if (engine.redis) {
    const r = engine.redis
    const families: Array<[string, Kind, number, string]> = [
      ['rat_redis_connected', 'gauge', r.connected ? 1 : 0, 'Both Redis connections (publishes, reads) are up.'],
      ['rat_redis_queued', 'gauge', r.queued, 'Publishes waiting for Redis.'],
      ['rat_redis_sent_total', 'counter', r.sent, 'Publishes Redis stored.'],
      ['rat_redis_rejected_total', 'counter', r.rejected, 'Publishes refused because the buffer was full.'],
      ['rat_redis_received_total', 'counter', r.received, 'Events read from Redis for this process.'],
      ['rat_redis_disconnects_total', 'counter', r.disconnects, 'Redis connections lost.'],
    ]
    for (const [name, kind, v, help] of families) out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n${name} ${sample(v)}\n`
  }
  if (channels.length === 0) return out
  const labels = channels.map(([name]) => `{channel="${escapeLabelValue(name)}"}`)
  for (const [name, kind, field, help] of CHANNEL) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n`
    for (let i = 0; i < channels.length; i++) out += `${name}${labels[i]} ${sample(channels[i][1][field])}\n`
  }
  return out
}
