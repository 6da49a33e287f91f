//! Plain JS objects crossing the boundary, and their conversion into engine options.

use std::time::Duration;

use crate::{js_error, Code, Result};
use napi_derive::napi;
use rat_engine::{ChannelOptions, MetricsSnapshot, QueueLimits, ServerConfig, SlowClient};

/// Options of a native engine.
#[napi(object)]
#[derive(Default)]
pub struct EngineOptions {
    /// Interval of the heartbeat comment on idle SSE streams, in ms; 0 turns it off.
    /// @default 15000
    pub heartbeat_ms: Option<u32>,
    /// Bytes queued per stream before `write`/`send` return false.
    /// @default 65536 for SSE, 262144 for chunked and NDJSON streams
    pub high_water_mark: Option<u32>,
    /// Bytes queued per stream past which a producer that ignores backpressure has its
    /// stream aborted (at least `highWaterMark`).
    /// @default max(64 × highWaterMark, 8 MiB)
    pub max_buffered_bytes: Option<u32>,
    /// Largest request body in bytes; larger ones get 413.
    /// @default 1048576
    pub max_body_bytes: Option<u32>,
    /// HTTP/1.1 keep-alive.
    /// @default true
    pub keep_alive: Option<bool>,
    /// Connections the kernel holds until they are accepted (capped by
    /// `net.core.somaxconn`).
    /// @default 1024
    pub backlog: Option<u32>,
    /// Limits and timeouts.
    pub limits: Option<Limits>,
    /// CORS for every route.
    pub cors: Option<CorsOptions>,
    /// Response compression for every route.
    pub compression: Option<CompressionOptions>,
    /// Static credentials per path prefix.
    pub auth: Option<Vec<AuthRule>>,
    /// Hand one access log entry per request to `dispatch`. @default false
    pub access_log: Option<bool>,
    /// Hand the engine's warnings to `dispatch`. @default false
    pub warnings: Option<bool>,
    /// Share channels between processes through Redis.
    pub redis: Option<RedisOptions>,
}

/// Where channels are shared (see `AppOptions.redis`).
#[napi(object)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Prepended to a channel's name to make its stream's key. @default 'rat:'
    pub key_prefix: Option<String>,
    /// Publishes held while Redis is unreachable; past it `publish` throws `ERR_REDIS`.
    /// @default 100000
    pub buffer: Option<u32>,
    /// Entries each channel's Redis stream keeps at least: how far a process may fall
    /// behind a burst without losing events. @default 10000
    pub stream_len: Option<u32>,
}

impl RedisOptions {
    pub(crate) fn to_hub(&self) -> rat_engine::Result<rat_engine::RedisHub> {
        let mut c = rat_engine::RedisConfig::new(&self.url);
        if let Some(p) = &self.key_prefix {
            c = c.key_prefix(p);
        }
        if let Some(b) = self.buffer {
            c = c.buffer(b as usize);
        }
        if let Some(n) = self.stream_len {
            c = c.stream_len(n as usize);
        }
        rat_engine::RedisHub::new(c)
    }
}

/// The state of the app's Redis connections.
#[napi(object)]
pub struct RedisState {
    /// Both connections (publishes, reads) up.
    pub connected: bool,
    /// Publishes waiting for Redis.
    pub queued: i64,
    /// Publishes Redis stored.
    pub sent: i64,
    /// Publishes refused because the buffer was full.
    pub rejected: i64,
    /// Events read from Redis and handed to this process's channels.
    pub received: i64,
    /// Connections lost.
    pub disconnects: i64,
    /// Shared channels this process reads.
    pub channels: i64,
}

impl From<rat_engine::RedisMetrics> for RedisState {
    fn from(m: rat_engine::RedisMetrics) -> Self {
        RedisState {
            connected: m.connected,
            queued: m.queued as i64,
            sent: m.sent as i64,
            rejected: m.rejected as i64,
            received: m.received as i64,
            disconnects: m.disconnects as i64,
            channels: m.channels as i64,
        }
    }
}

/// Response compression as the TS layer hands it over (see `AppOptions.compression`).
#[napi(object)]
pub struct CompressionOptions {
    /// Codings offered, in order of preference: `'zstd'`, `'br'`, `'gzip'`.
    /// @default ['zstd', 'br', 'gzip']
    pub encodings: Option<Vec<String>>,
    /// Full bodies under this many bytes are sent as they are. @default 1024
    pub threshold: Option<u32>,
    /// Level in each coding's scale (gzip 0-9, br 0-11, zstd 1-22).
    pub level: Option<u32>,
}

impl CompressionOptions {
    pub(crate) fn to_compression(&self) -> rat_engine::Result<rat_engine::compress::Compression> {
        use rat_engine::compress::{Compression, Encoding};
        let mut c = Compression::new();
        if let Some(list) = &self.encodings {
            let mut encodings = Vec::new();
            for name in list {
                encodings.push(Encoding::from_name(name).ok_or_else(|| {
                    rat_engine::Error::invalid_argument(format!(
                        "unknown compression encoding {name:?}: use 'zstd', 'br' or 'gzip'"
                    ))
                })?);
            }
            c = c.encodings(encodings);
        }
        if let Some(t) = self.threshold {
            c = c.threshold(t as usize);
        }
        if let Some(l) = self.level {
            c = c.level(l);
        }
        Ok(c)
    }
}

/// Credentials the engine requires under a path prefix (see `AppOptions.auth`).
#[napi(object)]
pub struct AuthRule {
    /// Paths under it (whole segments).
    pub prefix: String,
    /// Accepted `Authorization: Bearer` tokens.
    pub bearer: Option<Vec<String>>,
    /// Accepted API keys.
    pub api_keys: Option<Vec<String>>,
    /// The header that carries an API key. @default 'x-api-key'
    pub header: Option<String>,
}

impl AuthRule {
    pub(crate) fn to_rule(&self) -> rat_engine::Result<rat_engine::auth::TokenRule> {
        let mut rule = rat_engine::auth::TokenRule::new(self.prefix.clone());
        if let Some(b) = &self.bearer {
            rule = rule.bearer(b);
        }
        if let Some(k) = &self.api_keys {
            rule = rule.api_keys(self.header.as_deref().unwrap_or("x-api-key"), k)?;
        }
        Ok(rule)
    }
}

/// A CORS policy as the TS layer hands it over (see `AppOptions.cors`).
#[napi(object)]
#[derive(Default)]
pub struct CorsOptions {
    /// Exact origins; `*` allows any.
    pub origins: Vec<String>,
    /// Patterns (regex syntax) an origin may match in full.
    pub patterns: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: Option<bool>,
    /// Methods a preflight allows (default: the route's).
    pub methods: Option<Vec<String>>,
    /// Request headers a preflight allows (default: those it asks for).
    pub allowed_headers: Option<Vec<String>>,
    /// Response headers the page may read.
    pub exposed_headers: Option<Vec<String>>,
    /// Seconds a browser may cache a preflight's answer.
    pub max_age: Option<u32>,
    /// The TS layer's origin function deciding other origins (its index there).
    pub check: Option<u32>,
}

impl CorsOptions {
    pub(crate) fn to_cors(
        &self,
        dispatcher: &std::sync::Arc<crate::dispatch::Dispatcher>,
    ) -> rat_engine::Result<rat_engine::cors::Cors> {
        use rat_engine::cors::{Cors, Origins};
        let mut origins = if self.origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::list(self.origins.iter().cloned())
        };
        for p in &self.patterns {
            origins = origins.pattern(p)?;
        }
        let mut cors = Cors::new(origins).credentials(self.credentials.unwrap_or(false));
        if let Some(m) = &self.methods {
            cors = cors.methods(m)?;
        }
        if let Some(h) = &self.allowed_headers {
            cors = cors.allowed_headers(h)?;
        }
        if let Some(h) = &self.exposed_headers {
            cors = cors.exposed_headers(h)?;
        }
        if let Some(s) = self.max_age {
            cors = cors.max_age(Duration::from_secs(u64::from(s)));
        }
        if let Some(check) = self.check {
            let d = dispatcher.clone();
            cors = cors.check(move |origin| d.ask_origin(check, origin));
        }
        Ok(cors)
    }
}

/// Limits and timeouts of an engine (see `AppOptions.limits`).
#[napi(object)]
#[derive(Default)]
pub struct Limits {
    /// Connections open at once; past it new ones get a 503. @default no limit
    pub max_connections: Option<u32>,
    /// Streams open at once per client IP; past it a 429. @default no limit
    pub max_streams_per_ip: Option<u32>,
    /// Read the client IP from the last `X-Forwarded-For` address. @default false
    pub trust_proxy: Option<bool>,
    /// Time for a request head, in ms; past it the connection closes. @default 10000
    pub header_timeout_ms: Option<u32>,
    /// Time between two reads of a request body, in ms; past it a 408. @default 30000
    pub body_timeout_ms: Option<u32>,
    /// Time a keep-alive connection may wait for its next request, in ms. @default 60000
    pub idle_timeout_ms: Option<u32>,
    /// Time a plain handler has to answer, in ms (0: none); past it a 504. @default 30000
    pub handler_timeout_ms: Option<u32>,
    /// Age in ms at which a stream ends cleanly (clients reconnect). @default none
    pub max_stream_age_ms: Option<u32>,
    /// Largest request head in bytes; past it a 431. @default 16384
    pub max_header_bytes: Option<u32>,
    /// Longest request target in bytes; past it a 414. @default 8192
    pub max_url_bytes: Option<u32>,
}

impl From<&EngineOptions> for ServerConfig {
    fn from(o: &EngineOptions) -> Self {
        let mut c = ServerConfig::default();
        if let Some(ms) = o.heartbeat_ms {
            c = c.heartbeat((ms > 0).then(|| Duration::from_millis(u64::from(ms))));
        }
        if let Some(hwm) = o.high_water_mark {
            c = c.high_water_mark(hwm as usize);
        }
        if let Some(m) = o.max_buffered_bytes {
            c = c.max_buffered(m as usize);
        }
        if let Some(b) = o.max_body_bytes {
            c = c.max_body_bytes(b as usize);
        }
        if let Some(k) = o.keep_alive {
            c = c.keep_alive(k);
        }
        if let Some(b) = o.backlog {
            c = c.backlog(b);
        }
        if let Some(l) = &o.limits {
            let ms = |v: u32| Duration::from_millis(u64::from(v));
            c.max_connections = l.max_connections.map(|n| n as usize);
            c.max_streams_per_ip = l.max_streams_per_ip.map(|n| n as usize);
            c.trust_proxy = l.trust_proxy.unwrap_or(false);
            if let Some(v) = l.header_timeout_ms {
                c.header_timeout = ms(v.max(1));
            }
            if let Some(v) = l.body_timeout_ms {
                c.body_timeout = ms(v.max(1));
            }
            if let Some(v) = l.idle_timeout_ms {
                c.idle_timeout = ms(v.max(1));
            }
            if let Some(v) = l.handler_timeout_ms {
                c.handler_timeout = (v > 0).then(|| ms(v));
            }
            c.max_stream_age = l.max_stream_age_ms.filter(|v| *v > 0).map(ms);
            if let Some(v) = l.max_header_bytes {
                c.max_header_bytes = v as usize;
            }
            if let Some(v) = l.max_url_bytes {
                c.max_url_bytes = v as usize;
            }
        }
        c
    }
}

/// TLS of a listening engine: PEM text as bytes.
#[napi(object)]
pub struct TlsOptions {
    /// The certificate chain: the server's certificate first, then intermediates.
    pub cert: napi::bindgen_prelude::Buffer,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC; encrypted PKCS#8 with `passphrase`).
    pub key: napi::bindgen_prelude::Buffer,
    /// The passphrase of an encrypted key.
    pub passphrase: Option<String>,
}

impl TlsOptions {
    pub(crate) fn to_config(&self) -> rat_engine::Result<rat_engine::TlsConfig> {
        rat_engine::TlsConfig::from_pem(&self.cert, &self.key, self.passphrase.as_deref())
    }
}

/// Options of one route.
#[napi(object)]
#[derive(Default)]
pub struct RouteOptions {
    /// Hand the request body over as it arrives (`readChunk`) instead of reading it first.
    /// @default false
    pub stream_body: Option<bool>,
    /// This route's body limit in bytes (instead of the engine's `maxBodyBytes`).
    pub body_limit: Option<f64>,
    /// Streams of this (stream) route open at once; past it a 429. @default no limit
    pub max_streams: Option<u32>,
    /// This route's own CORS policy.
    pub cors: Option<CorsOptions>,
    /// No CORS for this route.
    pub cors_off: Option<bool>,
    /// Never compress this route's responses.
    pub compression_off: Option<bool>,
}

impl RouteOptions {
    /// The engine's route options.
    pub(crate) fn to_engine(
        &self,
        dispatcher: &std::sync::Arc<crate::dispatch::Dispatcher>,
    ) -> rat_engine::Result<rat_engine::RouteOptions> {
        use rat_engine::cors::RouteCors;
        let cors = match (&self.cors, self.cors_off) {
            (_, Some(true)) => RouteCors::Off,
            (Some(c), _) => RouteCors::Own(std::sync::Arc::new(c.to_cors(dispatcher)?)),
            (None, _) => RouteCors::Inherit,
        };
        Ok(rat_engine::RouteOptions {
            stream_body: self.stream_body.unwrap_or(false),
            body_limit: self.body_limit.filter(|b| *b >= 0.0).map(|b| b as u64),
            max_streams: self.max_streams.map(|n| n as usize),
            cors,
            compress: if self.compression_off == Some(true) {
                rat_engine::compress::RouteCompression::Off
            } else {
                rat_engine::compress::RouteCompression::Inherit
            },
            ..Default::default()
        })
    }
}

/// Options of a native channel.
#[napi(object)]
#[derive(Default)]
pub struct NativeChannelOptions {
    /// Events kept for Last-Event-ID replay; 0 turns history off.
    /// @default 1000
    pub history: Option<u32>,
    /// Bytes of encoded events kept for replay.
    /// @default 4194304
    pub history_bytes: Option<u32>,
    /// Age in ms after which events leave history.
    pub history_max_age_ms: Option<u32>,
    /// `'close'` (end a subscriber that falls behind; it resumes from history) or
    /// `'drop-oldest'` (drop its oldest queued events and count them).
    /// @default 'close'
    pub slow_client: Option<String>,
    /// Bytes queued per subscriber before the slow-client policy applies.
    /// @default 65536
    pub high_water_mark: Option<u32>,
    /// Shared through the app's Redis (when it has one). @default true
    pub redis: Option<bool>,
}

impl TryFrom<&NativeChannelOptions> for ChannelOptions {
    type Error = napi::Error<Code>;
    fn try_from(o: &NativeChannelOptions) -> Result<Self> {
        let mut c = ChannelOptions::default();
        if let Some(h) = o.history {
            c.history = h as usize;
        }
        if let Some(b) = o.history_bytes {
            c.history_bytes = b as usize;
        }
        c.history_max_age = o
            .history_max_age_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        c.slow_client = match o.slow_client.as_deref() {
            None | Some("close") => SlowClient::Close,
            Some("drop-oldest") => SlowClient::DropOldest,
            Some(other) => {
                return Err(js_error(
                    "ERR_INVALID_ARGUMENT",
                    format!("invalid slowClient {other:?}: use 'close' or 'drop-oldest'"),
                ))
            }
        };
        if let Some(hwm) = o.high_water_mark {
            c.queue = QueueLimits::with_high_water_mark(hwm as usize);
        }
        Ok(c)
    }
}

/// The address a server listens on.
#[napi(object)]
pub struct Address {
    /// The host (IP address).
    pub host: String,
    /// The port (the real one when 0 was asked).
    pub port: u32,
}

/// Server counters.
#[napi(object)]
pub struct EngineMetrics {
    /// Connections open now.
    pub active_connections: i64,
    /// Connections accepted since start.
    pub total_connections: i64,
    /// Requests received.
    pub total_requests: i64,
    /// Streaming responses open now.
    pub active_streams: i64,
    /// Streaming responses started.
    pub total_streams: i64,
    /// SSE events queued to clients (channel fan-out included).
    pub events_sent: i64,
    /// Body bytes handed to connections.
    pub bytes_sent: i64,
    /// Handlers that threw or rejected.
    pub handler_errors: i64,
    /// Requests the engine answered with an error itself (404, 405, 408, 413, 414, 429,
    /// 431, 504...).
    pub rejected_requests: i64,
    /// Connections refused with a 503 at `maxConnections`.
    pub refused_connections: i64,
    /// Streams refused with a 429 at `maxStreamsPerIp` or a route's `maxStreams`.
    pub refused_streams: i64,
    /// Connections closed because a request head was too slow.
    pub header_timeouts: i64,
    /// Requests answered 408 because their body stalled.
    pub body_timeouts: i64,
    /// Requests answered 504 because their handler did not answer in time.
    pub handler_timeouts: i64,
    /// Requests answered 401 for missing or unknown credentials (`auth`).
    pub unauthorized: i64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: Vec<i64>,
    /// Time from the engine queuing a batch for JS to the dispatch call starting, summed
    /// over `dispatchCount` calls, in ms.
    pub dispatch_lag_ms: f64,
    /// Dispatch calls made.
    pub dispatch_count: i64,
    /// The longest such wait, in ms.
    pub dispatch_lag_max_ms: f64,
    /// The Redis connections, when the app shares channels through Redis.
    pub redis: Option<RedisState>,
}

impl From<MetricsSnapshot> for EngineMetrics {
    fn from(m: MetricsSnapshot) -> Self {
        let n = |v: u64| v as i64;
        EngineMetrics {
            active_connections: n(m.active_connections),
            total_connections: n(m.total_connections),
            total_requests: n(m.total_requests),
            active_streams: n(m.active_streams),
            total_streams: n(m.total_streams),
            events_sent: n(m.events_sent),
            bytes_sent: n(m.bytes_sent),
            handler_errors: n(m.handler_errors),
            rejected_requests: n(m.rejected_requests),
            refused_connections: n(m.refused_connections),
            refused_streams: n(m.refused_streams),
            header_timeouts: n(m.header_timeouts),
            body_timeouts: n(m.body_timeouts),
            handler_timeouts: n(m.handler_timeouts),
            unauthorized: n(m.unauthorized),
            responses: m.responses.iter().map(|&v| n(v)).collect(),
            dispatch_lag_ms: 0.0,
            dispatch_count: 0,
            dispatch_lag_max_ms: 0.0,
            redis: None,
        }
    }
}

/// Channel counters.
#[napi(object)]
pub struct NativeChannelMetrics {
    /// Subscribers now.
    pub subscribers: i64,
    /// Events published.
    pub published: i64,
    /// Event copies handed to subscribers (written or queued), shortly after each publish.
    pub delivered: i64,
    /// Event copies dropped by the drop-oldest policy.
    pub dropped: i64,
    /// Event copies replayed from history.
    pub replayed: i64,
    /// Subscribers closed for falling behind.
    pub closed_slow: i64,
}

impl From<rat_engine::ChannelMetrics> for NativeChannelMetrics {
    fn from(m: rat_engine::ChannelMetrics) -> Self {
        NativeChannelMetrics {
            subscribers: m.subscribers as i64,
            published: m.published as i64,
            delivered: m.delivered as i64,
            dropped: m.dropped as i64,
            replayed: m.replayed as i64,
            closed_slow: m.closed_slow as i64,
        }
    }
}
