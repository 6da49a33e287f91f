//! The access log: one entry per request once its response is over (a stream when it
//! ends), to a callback the server is given ([`ServerConfig::access_log`]), and always as
//! a `tracing` event (target `rat_engine::access`, level info) for Rust users. And the
//! engine's warnings (a handler timeout, a failed TLS handshake, accept failing, slow
//! subscribers cut) to [`ServerConfig::warnings`] and as `tracing` events (target
//! `rat_engine`, level warn).
//!
//! [`ServerConfig::access_log`]: crate::ServerConfig::access_log
//! [`ServerConfig::warnings`]: crate::ServerConfig::warnings

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http_body::Body as _;
use tokio::time::Instant;

use crate::response::Response;

/// One request, as the access log records it.
#[derive(Debug, Clone)]
pub struct AccessEntry {
    /// The method.
    pub method: String,
    /// The path (without the query).
    pub path: String,
    /// The response status.
    pub status: u16,
    /// From the request head to the end of the response (of the stream, for a stream).
    pub duration: Duration,
    /// Response body bytes sent (without a stream's chunk framing).
    pub bytes: u64,
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

/// The callback that receives access log entries.
#[derive(Clone)]
pub struct AccessLog(Arc<dyn Fn(AccessEntry) + Send + Sync>);

impl AccessLog {
    /// Entries go to `f` (on the runtime's threads: keep it short).
    pub fn new(f: impl Fn(AccessEntry) + Send + Sync + 'static) -> AccessLog {
        AccessLog(Arc::new(f))
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

/// Something the engine did that an operator should know of.
#[derive(Debug, Clone)]
pub struct Warning {
    /// What happened: `handler_timeout`, `tls_handshake`, `accept`, `slow_subscribers`.
    pub kind: &'static str,
    /// A sentence for a log.
    pub message: String,
    /// The client, when one is concerned.
    pub remote: Option<SocketAddr>,
    /// The request path, when one is concerned.
    pub path: Option<String>,
}

/// The callback that receives the engine's warnings.
#[derive(Clone)]
pub struct WarningLog(Arc<dyn Fn(Warning) + Send + Sync>);

impl WarningLog {
    /// Warnings go to `f` (on the runtime's threads: keep it short).
    pub fn new(f: impl Fn(Warning) + Send + Sync + 'static) -> WarningLog {
        WarningLog(Arc::new(f))
    }

    pub(crate) fn emit(&self, w: Warning) {
        (self.0)(w)
    }
}

impl std::fmt::Debug for WarningLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarningLog")
    }
}

/// What is known of a request before its response: kept only while the log is on.
pub(crate) struct Pending {
    method: String,
    path: String,
    remote: Option<SocketAddr>,
    user_agent: Option<String>,
    start: Instant,
}

impl Pending {
    /// Notes a request, when anything logs it.
    pub(crate) fn new(
        log: Option<&AccessLog>,
        parts_method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        remote: Option<SocketAddr>,
    ) -> Option<Pending> {
        if log.is_none() && !tracing::enabled!(target: "rat_engine::access", tracing::Level::INFO) {
            return None;
        }
        Some(Pending {
            method: parts_method.as_str().to_string(),
            path: uri.path().to_string(),
            remote,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            start: Instant::now(),
        })
    }

    /// Logs the request when `res` is over: now for a full body, when the stream ends for
    /// a stream.
    pub(crate) fn finish(self, log: Option<&AccessLog>, res: &Response) {
        let status = res.status().as_u16();
        let log = log.cloned();
        match res.body().queue_sender() {
            Some(stream) => {
                stream.count_bytes();
                let weak = stream.downgrade();
                stream.on_close(move || {
                    let bytes = weak.upgrade().map_or(0, |s| s.sent_bytes());
                    self.emit(log.as_ref(), status, bytes);
                });
            }
            None => {
                let bytes = res.body().size_hint().exact().unwrap_or(0);
                self.emit(log.as_ref(), status, bytes);
            }
        }
    }

    fn emit(self, log: Option<&AccessLog>, status: u16, bytes: u64) {
        let entry = AccessEntry {
            method: self.method,
            path: self.path,
            status,
            duration: self.start.elapsed(),
            bytes,
            remote: self.remote,
            user_agent: self.user_agent,
        };
        tracing::info!(
            target: "rat_engine::access",
            method = %entry.method,
            path = %entry.path,
            status = entry.status,
            ms = entry.duration.as_secs_f64() * 1000.0,
            bytes = entry.bytes,
            remote = ?entry.remote,
            user_agent = entry.user_agent.as_deref(),
        );
        if let Some(log) = log {
            (log.0)(entry);
        }
    }
}
