//! Counters shared by the server, its streams and the front ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::access::{Warning, WarningLog};

/// Live counters of one server. Cheap to update (relaxed atomics); read with
/// [`Metrics::snapshot`].
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) active_connections: AtomicU64,
    pub(crate) total_connections: AtomicU64,
    pub(crate) total_requests: AtomicU64,
    pub(crate) active_streams: AtomicU64,
    pub(crate) total_streams: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) refused_streams: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) body_timeouts: AtomicU64,
    pub(crate) handler_timeouts: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    pub(crate) responses: [AtomicU64; 5],
    /// Where the server's warnings go besides `tracing` (set when it starts).
    pub(crate) warnings: OnceLock<WarningLog>,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Connections open now.
    pub active_connections: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Requests received since start.
    pub total_requests: u64,
    /// Streaming responses open now.
    pub active_streams: u64,
    /// Streaming responses started since start.
    pub total_streams: u64,
    /// SSE events written into stream queues (including channel fan-out) or pulled from
    /// [`Sse`](crate::Sse) streams.
    pub events_sent: u64,
    /// Body bytes handed to connections.
    pub bytes_sent: u64,
    /// Handlers that failed (500 or an `error` event).
    pub handler_errors: u64,
    /// Requests answered with a 4xx/5xx by the engine itself (404, 405, 413, 414, 429,
    /// 431, 408, 504...).
    pub rejected_requests: u64,
    /// Connections refused with a 503 at `max_connections`.
    pub refused_connections: u64,
    /// Streams refused with a 429 at `max_streams_per_ip` or a route's `max_streams`.
    pub refused_streams: u64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: u64,
    /// Requests answered 408 because their body stalled.
    pub body_timeouts: u64,
    /// Requests answered 504 because their handler did not answer in time.
    pub handler_timeouts: u64,
    /// Requests answered 401 by a [`TokenRule`](crate::auth::TokenRule).
    pub unauthorized: u64,
    /// Responses sent (their heads), by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
}

impl Metrics {
    /// New zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports a warning: a `tracing` event, and the server's warning log if it has one.
    pub(crate) fn warn(
        &self,
        kind: &'static str,
        message: String,
        remote: Option<SocketAddr>,
        path: Option<&str>,
    ) {
        tracing::warn!(target: "rat_engine", kind, remote = ?remote, path, "{message}");
        if let Some(log) = self.warnings.get() {
            log.emit(Warning {
                kind,
                message,
                remote,
                path: path.map(str::to_string),
            });
        }
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            active_connections: self.active_connections.load(Relaxed),
            total_connections: self.total_connections.load(Relaxed),
            total_requests: self.total_requests.load(Relaxed),
            active_streams: self.active_streams.load(Relaxed),
            total_streams: self.total_streams.load(Relaxed),
            events_sent: self.events_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            handler_errors: self.handler_errors.load(Relaxed),
            rejected_requests: self.rejected_requests.load(Relaxed),
            refused_connections: self.refused_connections.load(Relaxed),
            refused_streams: self.refused_streams.load(Relaxed),
            header_timeouts: self.header_timeouts.load(Relaxed),
            body_timeouts: self.body_timeouts.load(Relaxed),
            handler_timeouts: self.handler_timeouts.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
            responses: std::array::from_fn(|i| self.responses[i].load(Relaxed)),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Counts a response by its status class.
    pub(crate) fn count_response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        Self::add(&self.responses[class], 1);
    }

    /// Counts a handler failure (front ends call it when a JS handler throws).
    pub fn record_handler_error(&self) {
        Self::add(&self.handler_errors, 1);
    }
}
