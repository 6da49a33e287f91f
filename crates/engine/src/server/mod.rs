//! The HTTP server: accepts connections, serves HTTP/1.1 (plain GETs of long-lived routes
//! on a lean direct path, see `direct`; the rest through hyper-util's auto builder) and
//! HTTP/2 over TLS or h2c (the `h2` crate, see `h2`), routes requests to handlers and shuts
//! down gracefully.
//!
//! ```no_run
//! # async fn run() -> rat_engine::Result<()> {
//! use rat_engine::{App, Server, ServerConfig};
//! let mut app = App::new();
//! app.get("/", |_req| async { "hello" })?;
//! let server = Server::bind("127.0.0.1:8080", app, ServerConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod activity;
mod config;
mod direct;
pub(crate) use direct::upgraded_tcp;
pub(crate) mod h2;
mod registry;
mod service;
mod shutdown;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServerConfig;

use crate::tls::TlsConfig;
use registry::StreamRegistry;
use shutdown::Shutdown;

use crate::app::App;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Starts servers. See [`Server::bind`].
#[derive(Debug)]
pub struct Server;

/// A running server: its address, its metrics, and the way to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop_accepting: CancellationToken,
    shutdown: Shutdown,
    tracker: TaskTracker,
    accept_loop: tokio::task::JoinHandle<()>,
    streams: Arc<StreamRegistry>,
    redis: Option<crate::channel::RedisHub>,
}

/// What every connection task uses, kept here rather than in each task (a task's size is
/// paid once per idle subscriber).
pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) streams: Arc<StreamRegistry>,
    /// hyper's auto builder, for connections handed over to it.
    pub(crate) builder: direct::Builder,
    /// The settings of HTTP/2 connections over TLS (see `h2`).
    pub(crate) h2: ::h2::server::Builder,
    /// Asks connections to finish, then drops those still open when the grace period is
    /// over.
    pub(crate) shutdown: Shutdown,
    /// Accepts TLS connections, when the server serves HTTPS.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Streams open per client IP, with `max_streams_per_ip`.
    pub(crate) streams_per_ip: service::StreamsPerIp,
}

impl Shared {
    pub(crate) fn new(app: App, config: ServerConfig) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(config.keep_alive)
            .header_read_timeout(config.header_timeout)
            .max_buf_size(config.http1_max_buf_size.max(8192));
        builder.http2().timer(TokioTimer::new());
        let tls = config.tls.as_ref().map(TlsConfig::server_config);
        let metrics = Metrics::new();
        if let Some(w) = &config.warnings {
            let _ = metrics.warnings.set(w.clone());
        }
        Shared {
            tls,
            streams_per_ip: Arc::default(),
            app,
            config,
            metrics: Arc::new(metrics),
            streams: Arc::new(StreamRegistry::default()),
            builder,
            h2: h2::builder(),
            shutdown: Shutdown::default(),
        }
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; the first of its addresses that can be
    /// bound is used) with the config's [`backlog`](ServerConfig::backlog) and starts
    /// serving `app` on the current tokio runtime.
    ///
    /// Connects [`ServerConfig::redis`] first, when set.
    ///
    /// # Errors
    /// [`Error::is_io`] when the address cannot be bound (in use, not permitted...);
    /// [`Error::is_redis`] when Redis cannot be reached.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        app: App,
        config: ServerConfig,
    ) -> Result<ServerHandle> {
        if let Some(hub) = &config.redis {
            hub.start().await?;
        }
        let listener = listen(addr, config.backlog, config.reuse_port)
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::io_as("the port is already in use", e)
                } else {
                    Error::io("cannot listen", e)
                }
            })?;
        Self::serve(listener, app, config)
    }

    /// Serves `app` on an already bound listener. (A [`ServerConfig::redis`] hub is not
    /// connected here: call its `start` first.)
    ///
    /// # Errors
    /// [`Error::is_io`] if the listener's address cannot be read.
    pub fn serve(listener: TcpListener, app: App, config: ServerConfig) -> Result<ServerHandle> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", e))?;
        let redis = config.redis.clone();
        let shared = Arc::new(Shared::new(app, config));
        let metrics = shared.metrics.clone();
        let streams = shared.streams.clone();
        let shutdown = shared.shutdown.clone();
        let stop_accepting = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            shared,
            stop_accepting.clone(),
            tracker.clone(),
        ));
        Ok(ServerHandle {
            local_addr,
            metrics,
            stop_accepting,
            shutdown,
            tracker,
            accept_loop,
            streams,
            redis,
        })
    }
}

impl ServerHandle {
    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's live counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting and asks every connection to finish: idle keep-alive connections
    /// close at once, responses in flight (streams included) may go on for `grace`. Streams
    /// still open then get what they queued, then SSE streams end cleanly (the browser
    /// reconnects and resumes) and byte streams are cut without their last chunk (their
    /// client must not take them for complete); connections that cannot take even that
    /// within a short flush window are closed.
    /// Resolves when every connection is gone.
    pub async fn shutdown(self, grace: Duration) {
        let redis = self.redis.clone();
        self.close(grace).await;
        if let Some(hub) = redis {
            hub.stop();
        }
    }

    async fn close(self, grace: Duration) {
        self.stop_accepting.cancel();
        let _ = self.accept_loop.await;
        self.shutdown.begin();
        self.streams.shut_down_ws();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        self.streams.end_all();
        let flush = grace.clamp(Duration::from_millis(100), Duration::from_secs(1));
        if tokio::time::timeout(flush, self.tracker.wait())
            .await
            .is_err()
        {
            self.shutdown.force();
            self.tracker.wait().await;
        }
    }

    /// Runs until `signal` resolves, then shuts down with `grace`.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>, grace: Duration) {
        signal.await;
        self.shutdown(grace).await;
    }
}

/// Binds and listens as `TcpListener::bind` does (address reuse on Unix, each resolved
/// address in turn), with `backlog`, and `SO_REUSEPORT` when `reuse_port` (Unix; elsewhere
/// an error).
async fn listen(
    addr: impl ToSocketAddrs,
    backlog: u32,
    reuse_port: bool,
) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        if reuse_port {
            #[cfg(unix)]
            socket.set_reuseport(true)?;
            #[cfg(not(unix))]
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "reuse_port needs SO_REUSEPORT (Unix)",
            ));
        }
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    // Failed accepts in a row: a burst (out of file descriptors...) is logged once when it
    // starts and once when it ends, not per attempt.
    let mut failing = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if failing == 0 {
                        let msg = format!("accept failed: {e}; retrying every 20 ms");
                        shared.metrics.warn("accept", msg, None, None);
                    }
                    failing += 1;
                    // Back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if failing > 0 {
            let msg = format!("accepting again after {failing} failed attempts");
            shared.metrics.warn("accept", msg, None, None);
            failing = 0;
        }
        let _ = stream.set_nodelay(true);
        let open = shared.metrics.active_connections.load(Ordering::Relaxed);
        if shared
            .config
            .max_connections
            .is_some_and(|max| open >= max as u64)
        {
            Metrics::add(&shared.metrics.refused_connections, 1);
            if shared.tls.is_none() {
                tokio::spawn(refuse_connection(stream));
            }
            continue;
        }
        Metrics::add(&shared.metrics.active_connections, 1);
        Metrics::add(&shared.metrics.total_connections, 1);
        match &shared.tls {
            Some(tls) => tracker.spawn(tls_connection(
                stream,
                peer,
                tls.clone(),
                shared.clone(),
                tracker.clone(),
            )),
            None => tracker.spawn(direct::connection(
                crate::wire::Conn::plain(stream),
                Box::new(peer),
                shared.clone(),
            )),
        };
    }
}

/// A plain HTTP connection past `max_connections`: a 503 and the end. (On a TLS port the
/// connection is closed at once.)
async fn refuse_connection(stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = r#"{"error":"the server is at its connection limit","status":503}"#;
    let res = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut stream = stream;
    let write = async {
        let _ = stream.write_all(res.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A TLS handshake not finished within this time closes its connection.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one TLS connection: the handshake (bounded in time), then the engine's HTTP/2
/// server (`h2`), or for HTTP/1.1 (ALPN `http/1.1` or none) the direct path, as a plain
/// connection. A client that does not complete the handshake (plain HTTP, garbage, or
/// nothing) loses only its own connection.
async fn tls_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    // Boxed, as is hyper's part: the task keeps only the state it idles in (the direct
    // path's), not the handshake's.
    let Some(session) = Box::pin(handshake(&stream, peer, tls, &shared)).await else {
        Metrics::sub(&shared.metrics.active_connections, 1);
        return;
    };
    if session.is_h2() {
        let io = crate::wire::tls::TlsIo::new(stream, session);
        Box::pin(h2::serve(io, peer, &shared)).await;
        Metrics::sub(&shared.metrics.active_connections, 1);
    } else {
        // The direct path counts the connection out when it ends. A task of its own, as a
        // plain connection's: the one it idles in holds the direct path's future only, not
        // this one's around it.
        let conn = crate::wire::Conn::tls(stream, session);
        tracker.spawn(direct::connection(conn, Box::new(peer), shared));
    }
}

/// The TLS handshake, bounded in time and ended by shutdown: `None` when it did not finish
/// (the reason is logged).
async fn handshake(
    stream: &tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    shared: &Shared,
) -> Option<Box<crate::wire::tls::Session>> {
    let accept = crate::wire::tls::Session::accept(stream, tls);
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept);
    tokio::select! {
        biased;
        _ = shared.shutdown.begun() => None,
        r = handshake => match r {
            Ok(Ok(session)) => Some(session),
            Ok(Err(e)) => {
                shared.metrics.warn("tls_handshake", format!("TLS handshake failed: {e}"), Some(peer), None);
                None
            }
            Err(_) => {
                let msg = format!("TLS handshake not done in {} s", TLS_HANDSHAKE_TIMEOUT.as_secs());
                shared.metrics.warn("tls_handshake", msg, Some(peer), None);
                None
            }
        },
    }
}

/// How long a connection closed for idleness has to finish its goodbye (HTTP/2's GOAWAY and
/// ping) before it is dropped.
pub(crate) const IDLE_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// hyper serves a connection (HTTP/1.1) until it closes, finishing it gracefully
/// at shutdown and dropping it when the grace period is over, and closing it once it has
/// had nothing in flight for the idle timeout.
pub(crate) async fn serve_io<I>(io: I, peer: SocketAddr, shared: &Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = activity::Activity::new();
    let svc = service::EngineService::new(shared.clone(), peer, activity.clone());
    let (builder, shutdown) = (&shared.builder, &shared.shutdown);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => { let _ = res; }
        _ = activity.idle_for(shared.config.idle_timeout, tokio::time::Instant::now()) => {
            // Nothing in flight for the idle timeout: HTTP/2 sends GOAWAY, HTTP/1.1 closes.
            // A client that does not answer the GOAWAY's ping (or sent only the preface)
            // is not waited for once the connection has been quiet a moment more.
            conn.as_mut().graceful_shutdown();
            let now = tokio::time::Instant::now();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = activity.idle_for(IDLE_CLOSE_GRACE, now) => {}
                _ = shutdown.forced() => {}
            }
        }
        _ = shutdown.begun() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.forced() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A burst of connects larger than std's backlog of 128 completes at once while
    /// nothing accepts: none waits for a SYN retry.
    #[tokio::test]
    async fn the_listen_backlog_holds_a_burst_of_connects() {
        let listener = super::listen("127.0.0.1:0", 1024, false).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..300).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures_util::future::join_all(connects).await;
        let done = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(done, 300, "connects completed without being accepted");
        drop(listener);
    }

    /// With `reuse_port`, a second listener binds the port a first one holds; without it,
    /// the port is in use.
    #[cfg(unix)]
    #[tokio::test]
    async fn reuse_port_lets_listeners_share_a_port() {
        let a = super::listen("127.0.0.1:0", 16, true).await.unwrap();
        let addr = a.local_addr().unwrap();
        let b = super::listen(addr, 16, true).await.unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        let err = super::listen(addr, 16, false).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
