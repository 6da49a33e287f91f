//! Server options.

use std::sync::Arc;
use std::time::Duration;

use crate::cors::Cors;
use crate::stream::QueueLimits;
use crate::tls::TlsConfig;

/// Default high-water mark of byte streams (see [`ServerConfig::byte_queue`]).
const DEFAULT_BYTE_STREAM_HIGH_WATER_MARK: usize = 256 * 1024;

/// Options of a [`Server`](super::Server). Build with `ServerConfig::default()` and the
/// methods named after each option.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interval of the comment line an idle SSE stream sends so that proxies and clients
    /// keep it open; `None` turns heartbeats off. Default: 15 s.
    pub heartbeat: Option<Duration>,
    /// Largest request body read; larger ones get 413. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// Limits of each SSE stream's queue (high-water mark 64 KiB, hard limit 8 MiB by
    /// default).
    pub queue: QueueLimits,
    /// Limits of byte streams (chunked, NDJSON) made by a front end: high-water mark
    /// 256 KiB by default, so that a producer writing 64 KiB chunks hands over several per
    /// wake-up (about 20% less server CPU per byte than at 64 KiB; at 1 MiB the data in
    /// flight outgrows the caches and it gets slower again). Hard limit 16 MiB.
    pub byte_queue: QueueLimits,
    /// HTTP/1.1 keep-alive. Default: on.
    pub keep_alive: bool,
    /// Largest HTTP/1 buffer per connection (at least 8 KiB): how far a request head may
    /// grow, and how much response body hyper gathers into one `writev`. Default: 512 KiB
    /// (hyper's own default is ~400 KiB); at 64 KiB every 64 KiB chunk was flushed on its
    /// own and `/chunked` ran at about half the speed.
    pub http1_max_buf_size: usize,
    /// Connections the kernel holds for [`Server::bind`](super::Server::bind) until they
    /// are accepted (the kernel caps it at `net.core.somaxconn`). Default: 1024, as
    /// tokio's `TcpSocket` examples; Rust's std listens with 128, which a burst of a few
    /// hundred connects overflows: the dropped SYNs are retried after a second.
    pub backlog: u32,
    /// Bind with `SO_REUSEPORT` (Unix), so that several processes listening on the same
    /// address and port share its connections (the kernel spreads them). Every process
    /// must set it. Default: false.
    pub reuse_port: bool,
    /// Serve HTTPS with this certificate (HTTP/2 and HTTP/1.1 by ALPN) instead of plain
    /// HTTP. Default: none.
    pub tls: Option<TlsConfig>,
    /// Connections open at once; past it a new connection gets a 503 and is closed.
    /// Default: no limit.
    pub max_connections: Option<usize>,
    /// Streams (responses of [stream routes](crate::RouteOptions::stream)) open at once
    /// per client IP; past it a 429 with `retry-after`. Default: no limit (behind a proxy
    /// every client shares its address, and load tests come from one).
    pub max_streams_per_ip: Option<usize>,
    /// Take the client IP for [`max_streams_per_ip`](Self::max_streams_per_ip) from the
    /// last address of `X-Forwarded-For` (the one the nearest proxy added) instead of the
    /// socket. Only behind a proxy that sets it. Default: false.
    pub trust_proxy: bool,
    /// Time allowed for a request head from its first byte (from the connection's start
    /// for its first request); past it the connection is closed (slowloris). Default: 10 s.
    pub header_timeout: Duration,
    /// Time allowed between two reads of a request body; past it a 408. Default: 30 s.
    pub body_timeout: Duration,
    /// Time a connection may wait with no request in flight and no response open: an
    /// HTTP/1.1 keep-alive connection for its next request, an HTTP/2 one (GOAWAY) for its
    /// next stream. Default: 60 s.
    pub idle_timeout: Duration,
    /// Time a handler of a route that is not a [stream route](crate::RouteOptions::stream)
    /// has to answer; past it a 504, and the handler's future is dropped (a front end
    /// aborts its request). Default: 30 s.
    pub handler_timeout: Option<Duration>,
    /// Age at which a stream is ended cleanly (after what it queued): an SSE client
    /// reconnects and resumes, so connections are spread again over servers that were
    /// added meanwhile. Default: none.
    pub max_stream_age: Option<Duration>,
    /// Largest request head in bytes; past it a 431. Default: 16 KiB. (On a connection
    /// handed to hyper, later heads are bounded by
    /// [`http1_max_buf_size`](Self::http1_max_buf_size).)
    pub max_header_bytes: usize,
    /// Longest request target (path and query) in bytes; past it a 414. Default: 8 KiB.
    pub max_url_bytes: usize,
    /// CORS for every route (a route may turn it off or use its own: see
    /// [`RouteOptions::cors`](crate::RouteOptions::cors)). Default: none.
    pub cors: Option<Arc<Cors>>,
    /// Where the engine's warnings go besides `tracing` (see [`access`](crate::access)).
    /// Default: none.
    pub warnings: Option<crate::access::WarningLog>,
    /// Response compression for every route (a route may turn it off: see
    /// [`RouteOptions::compress`](crate::RouteOptions::compress)). Default: none.
    pub compression: Option<Arc<crate::compress::Compression>>,
    /// Static credentials per path prefix, checked before any handler (see
    /// [`auth`](crate::auth)). Default: none.
    pub auth: Arc<[crate::auth::TokenRule]>,
    /// Receives one [`AccessEntry`](crate::access::AccessEntry) per request when its
    /// response is over. (Entries are also `tracing` events.) Default: none.
    pub access_log: Option<crate::access::AccessLog>,
    /// The hub of the app's [shared channels](crate::Channel::shared):
    /// [`Server::bind`](super::Server::bind) connects it (failing when Redis cannot be
    /// reached) and shutdown stops it. Default: none.
    pub redis: Option<crate::channel::RedisHub>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat: Some(Duration::from_secs(15)),
            max_body_bytes: 1 << 20,
            queue: QueueLimits::default(),
            byte_queue: QueueLimits::with_high_water_mark(DEFAULT_BYTE_STREAM_HIGH_WATER_MARK),
            keep_alive: true,
            http1_max_buf_size: 512 * 1024,
            backlog: 1024,
            reuse_port: false,
            tls: None,
            max_connections: None,
            max_streams_per_ip: None,
            trust_proxy: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handler_timeout: Some(Duration::from_secs(30)),
            max_stream_age: None,
            max_header_bytes: 16 * 1024,
            max_url_bytes: 8 * 1024,
            cors: None,
            compression: None,
            warnings: None,
            auth: Arc::new([]),
            access_log: None,
            redis: None,
        }
    }
}

impl ServerConfig {
    /// Same as `default()`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }
    /// Sets [`backlog`](Self::backlog).
    pub fn backlog(mut self, connections: u32) -> Self {
        self.backlog = connections.max(1);
        self
    }
    /// Sets [`reuse_port`](Self::reuse_port).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
    /// Sets the high-water mark of every stream queue, SSE and byte streams alike (the hard
    /// limit follows it).
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.queue = QueueLimits::with_high_water_mark(bytes);
        self.byte_queue = self.queue;
        self
    }
    /// Sets the hard limit of every stream queue (at least its high-water mark): a producer
    /// that writes past it without waiting has its stream aborted.
    pub fn max_buffered(mut self, bytes: usize) -> Self {
        self.queue.max_buffered = bytes.max(self.queue.high_water_mark);
        self.byte_queue.max_buffered = bytes.max(self.byte_queue.high_water_mark);
        self
    }
    /// Sets [`tls`](Self::tls).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Adds a [`TokenRule`](crate::auth::TokenRule) to [`auth`](Self::auth).
    pub fn auth(mut self, rule: crate::auth::TokenRule) -> Self {
        let mut rules = self.auth.to_vec();
        rules.push(rule);
        self.auth = rules.into();
        self
    }
    /// Sets [`cors`](Self::cors).
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(Arc::new(cors));
        self
    }
    /// Sets [`compression`](Self::compression).
    pub fn compression(mut self, compression: crate::compress::Compression) -> Self {
        self.compression = Some(Arc::new(compression));
        self
    }
    /// Sets [`redis`](Self::redis).
    pub fn redis(mut self, hub: crate::channel::RedisHub) -> Self {
        self.redis = Some(hub);
        self
    }
    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_streams_get_a_larger_mark_unless_one_is_set() {
        let c = ServerConfig::default();
        assert_eq!(c.queue.high_water_mark, 64 * 1024);
        assert_eq!(c.byte_queue.high_water_mark, 256 * 1024);
        assert!(c.byte_queue.max_buffered >= c.byte_queue.high_water_mark);
        let c = ServerConfig::default().high_water_mark(1000);
        assert_eq!(c.queue, c.byte_queue);
        let c = ServerConfig::default().max_buffered(1 << 20);
        assert_eq!(c.queue.max_buffered, 1 << 20);
        assert_eq!(c.byte_queue.max_buffered, 1 << 20);
        // Never below the mark.
        let c = ServerConfig::default().max_buffered(1);
        assert_eq!(c.byte_queue.max_buffered, 256 * 1024);
    }
}
