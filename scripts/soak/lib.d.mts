// Types of lib.mjs for the TypeScript tests that use it.
export declare const root: string
export declare function ratBench(options?: { release?: boolean }): string
export declare function hardNofile(): string

export interface SoakServer {
  proc: import('node:child_process').ChildProcess
  port: number
  exited: Promise<number | string | null>
  metrics(options?: { gc?: boolean }): Promise<ServerReport>
  printed(line: string): Promise<number>
  sample(): { cpuS: number; rss: number; at: number }
  stop(): Promise<void>
}

export interface ServerReport {
  metrics: import('../../ts/index.js').EngineMetrics
  channels: Record<'soak' | 'churn', import('../../ts/index.js').ChannelMetrics>
  counts: { started: number; finished: number; finallyTwice: number }
  /** The /churn/ws route: sockets opened, close handlers run, run twice, messages echoed. */
  ws: { opened: number; closed: number; closedTwice: number; messages: number }
  /** With --access-log: access log entries by path, entries and warnings dropped, other warnings. */
  logs: { byPath: Record<string, number>; dropped: number; warnings: string[] }
  wrongId: number
  last: number
  rss: number
  memory: NodeJS.MemoryUsage
  cpu: { user: number; system: number }
}

export declare function startServer(options?: { args?: string[]; nofile?: string | number }): Promise<SoakServer>
export declare function runBench(bin: string, args: string[], onMarker?: (name: string) => void): Promise<Record<string, any>>
export declare function slope(xs: number[], ys: number[]): number

export interface SoakResult {
  client: Record<string, any>
  server: ServerReport
  atRest: boolean
  rss: {
    samples: number
    steadySamples: number
    warmupS: number
    atConnectedMiB: number
    steadyFirstMiB: number
    steadyLastMiB: number
    peakMiB: number
    slopeMiBPerMin: number
    steadyWindowS: number
    series: Array<[number, number]>
    heap: Array<[number, number, number]>
  }
  serverCpuS: number
}

export declare function soak(options: {
  bin: string
  subscribers: number
  seconds: number
  rate?: number
  reconnectsPerS?: number
  reconnectDelayMs?: number
  warmupS?: number
  sampleMs?: number
  settleS?: number
  log?: (line: string) => void
}): Promise<SoakResult>

export interface ChurnResult {
  client: Record<string, any>
  server: ServerReport
  atRest: boolean
  rss: {
    warmMiB: number
    endMiB: number
    growth: number
    heapUsedWarmMiB: number
    heapUsedEndMiB: number
    /** [percent of the cycles, RSS, heapUsed, heapTotal (MiB)] */
    series: Array<[number, number, number, number]>
  }
}

export declare function churn(options: {
  bin: string
  cycles: number
  concurrency?: number
  earlyPercent?: number
  warmupFraction?: number
  settleMs?: number
  log?: (line: string) => void
}): Promise<ChurnResult>

export interface WsChurnResult {
  client: { cycles: number; failed: number; cut: number; closed: number; afterEvent: number; errors: string[] }
  server: ServerReport
  atRest: boolean
  rss: { warmMiB: number; endMiB: number; growth: number }
}

export declare function wsChurn(options: {
  cycles: number
  concurrency?: number
  warmupFraction?: number
  settleMs?: number
  cycleTimeoutMs?: number
}): Promise<WsChurnResult>
