// Types of parse-prometheus-text-format (it ships none), for what the tests read.
declare module 'parse-prometheus-text-format' {
  export interface PrometheusSample {
    value: string
    labels?: Record<string, string>
    timestamp_ms?: string
  }
  export interface PrometheusFamily {
    name: string
    help: string
    type: 'COUNTER' | 'GAUGE' | 'SUMMARY' | 'HISTOGRAM' | 'UNTYPED'
    metrics: PrometheusSample[]
  }
  /** Parses the text exposition format; throws on a line it cannot read. */
  export default function parsePrometheusTextFormat(text: string): PrometheusFamily[]
}
