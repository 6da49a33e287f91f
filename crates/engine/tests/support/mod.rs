//! Helpers shared by the integration tests: start a server on a free loopback port, talk
//! to it byte by byte over a raw TCP socket (HTTP/1.1 with a chunked-body decoder), or
//! through hyper's client, and an independent SSE parser ([`sse`]).
//!
//! Every read has a deadline so that a broken server fails a test instead of hanging it.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod sse;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rat_engine::{App, Handler, RouteOptions, Server, ServerConfig, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Cases per in-process property test: `RAT_FUZZ_CASES` if set, else `ci` (as the
/// crate's own `fuzz` modules; the soak run sets 1,000,000).
pub fn fuzz_cases(ci: u32) -> u32 {
    env_u32("RAT_FUZZ_CASES").unwrap_or(ci)
}

/// Cases per property test that talks to a server over loopback: `RAT_FUZZ_WIRE_CASES` if
/// set, else `ci`.
pub fn fuzz_wire_cases(ci: u32) -> u32 {
    env_u32("RAT_FUZZ_WIRE_CASES").unwrap_or(ci)
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// How long any single read or request may take before the test fails.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Starts `app` on 127.0.0.1 with a free port.
pub async fn serve(app: App) -> ServerHandle {
    serve_with(app, ServerConfig::default()).await
}

/// Starts `app` on 127.0.0.1 with a free port and the given config.
pub async fn serve_with(app: App, config: ServerConfig) -> ServerHandle {
    Server::bind("127.0.0.1:0", app, config)
        .await
        .expect("bind 127.0.0.1:0")
}

/// rustls with the ring provider, as the engine's tls module has it.
#[allow(deprecated)] // the ring provider: see the engine's tls module
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client that trusts the certificate `der` and offers `alpn`.
pub fn tls_connector(
    der: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    tls_connector_with(tls_provider(), der, alpn)
}

/// [`tls_connector`] with the given crypto provider (e.g. one cipher suite only).
pub fn tls_connector_with(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    der: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Adds a WebSocket route at `path` that echoes every message.
pub fn ws_echo(app: &mut App, path: &str) {
    app.ws(path, |_req, mut ws: rat_engine::ws::WebSocket| async move {
        while let Some(m) = ws.recv().await {
            ws.sender().send(m);
        }
    })
    .unwrap();
}

/// Awaits `fut` or panics with `what` after `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms until it holds, or panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("condition not met within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The two writers of an HTTP/1.1 response: hyper's connection, and the engine's direct
/// path (plain `GET`s of long-lived routes). The wire tests run on both
/// ([`on_both_wires`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Hyper,
    Direct,
}

impl Wire {
    /// Route options that put a route's plain `GET`s on this wire.
    pub fn options(self) -> RouteOptions {
        RouteOptions {
            long_lived: self == Wire::Direct,
            ..RouteOptions::default()
        }
    }

    /// Adds a GET route whose plain requests this wire serves.
    pub fn get<'a>(
        self,
        app: &'a mut App,
        path: &str,
        handler: impl Handler,
    ) -> rat_engine::Result<&'a mut App> {
        app.route_with(
            http::Method::GET,
            path,
            std::sync::Arc::new(handler),
            self.options(),
        )
    }

    /// Asserts that this wire wrote `head` (see [`wrote_directly`]).
    #[track_caller]
    pub fn assert_wrote(self, head: &Head) {
        let direct = wrote_directly(head);
        assert_eq!(
            direct,
            self == Wire::Direct,
            "written by the other wire: {head:?}"
        );
    }
}

/// Adds a long-lived GET route (its plain HTTP/1.1 requests served by the direct path).
pub fn long_lived(app: &mut App, path: &str, handler: impl Handler) {
    Wire::Direct.get(app, path, handler).unwrap();
}

/// True when the engine's direct path wrote `head`: it writes `date` before the framing
/// header, hyper after it.
#[track_caller]
pub fn wrote_directly(head: &Head) -> bool {
    let pos = |name: &str| head.headers.iter().position(|(k, _)| k == name);
    let date = pos("date").expect("a date header");
    let framing = pos("transfer-encoding")
        .or(pos("content-length"))
        .expect("a framing header");
    date < framing
}

/// Runs each `async fn name(wire: Wire)` listed as two tests, `hyper::name` and
/// `direct::name`, each with the attributes given (`#[tokio::test]`...).
#[allow(unused_macros)] // each test file uses a different subset of these helpers
macro_rules! on_both_wires {
    ($(#[$attr:meta] $name:ident),* $(,)?) => {
        mod hyper {
            $(#[$attr] async fn $name() { super::$name($crate::support::Wire::Hyper).await })*
        }
        mod direct {
            $(#[$attr] async fn $name() { super::$name($crate::support::Wire::Direct).await })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_wires;

/// The status line and headers of a response read off the wire.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `name`.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// True when the body uses chunked transfer coding.
    pub fn is_chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
    /// The declared content length.
    pub fn content_length(&self) -> Option<usize> {
        self.get("content-length")
            .map(|v| v.parse().expect("numeric content-length"))
    }
}

/// One step of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A data chunk.
    Data(Vec<u8>),
    /// The terminating zero-size chunk (and trailers): a clean end.
    End,
    /// The connection closed (or was reset) before the terminating chunk.
    Eof,
}

/// A raw HTTP/1.1 connection: write exact bytes, read exact bytes.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = within(READ_DEADLINE, "connect", TcpStream::connect(addr))
            .await
            .expect("connect to the test server");
        RawConn::from_stream(stream)
    }

    /// Wraps a connected socket.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the test server");
    }

    /// Writes a request: `Host` is added, and `Content-Length` when `body` is non-empty
    /// and no framing header was given.
    pub async fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let framed = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        });
        if !body.is_empty() && !framed {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await;
    }

    /// Reads more bytes into the buffer; false at EOF (or reset).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = within(
            READ_DEADLINE,
            "bytes from the server",
            self.stream.read(&mut tmp),
        )
        .await
        .unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        true
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let pos = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let line = self.buf[..pos].to_vec();
        self.buf.drain(..pos + 2);
        Some(line)
    }

    async fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(line) = self.take_line() {
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads a status line and headers (skipping 1xx responses).
    pub async fn read_head(&mut self) -> Head {
        loop {
            let status_line = self.read_line().await.expect("a status line before EOF");
            let status_line = String::from_utf8(status_line).expect("ASCII status line");
            let mut parts = status_line.splitn(3, ' ');
            assert_eq!(
                parts.next(),
                Some("HTTP/1.1"),
                "status line {status_line:?}"
            );
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .expect("status code");
            let mut headers = Vec::new();
            loop {
                let line = self.read_line().await.expect("headers before EOF");
                if line.is_empty() {
                    break;
                }
                let line = String::from_utf8(line).expect("ASCII header line");
                let (k, v) = line.split_once(':').expect("header with a colon");
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            return Head { status, headers };
        }
    }

    /// Reads exactly `n` body bytes.
    pub async fn read_exact_body(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "EOF after {} of {n} body bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads the next chunk of a chunked body.
    pub async fn read_chunk(&mut self) -> Chunk {
        let Some(size_line) = self.read_line().await else {
            return Chunk::Eof;
        };
        let size_line = String::from_utf8(size_line).expect("ASCII chunk size");
        let size_hex = size_line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                match self.read_line().await {
                    Some(l) if l.is_empty() => return Chunk::End,
                    Some(_) => continue,
                    None => return Chunk::Eof,
                }
            }
        }
        while self.buf.len() < size + 2 {
            if !self.fill().await {
                return Chunk::Eof;
            }
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(&self.buf[..2], b"\r\n", "chunk data must end with CRLF");
        self.buf.drain(..2);
        Chunk::Data(data)
    }

    /// Reads a whole chunked body; panics if it does not end cleanly.
    pub async fn read_chunked_body(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            match self.read_chunk().await {
                Chunk::Data(d) => all.extend_from_slice(&d),
                Chunk::End => return all,
                Chunk::Eof => panic!("connection closed inside a chunked body"),
            }
        }
    }

    /// Reads a whole body framed as `head` says (content-length or chunked).
    pub async fn read_body(&mut self, head: &Head) -> Vec<u8> {
        if head.is_chunked() {
            self.read_chunked_body().await
        } else {
            let n = head.content_length().unwrap_or(0);
            self.read_exact_body(n).await
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn roundtrip(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Head, Vec<u8>) {
        self.send_request(method, path, headers, body).await;
        let head = self.read_head().await;
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            self.read_body(&head).await
        };
        (head, body)
    }

    /// Waits up to `limit` for the server to close the connection. Returns true on EOF or
    /// reset; false if it stays open. Bytes that arrive meanwhile are kept.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        if self.eof {
            return true;
        }
        let deadline = Instant::now() + limit;
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.eof = true;
                    return true;
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// The socket, and the bytes read from it but not yet consumed (to hand it to another
    /// protocol after an upgrade).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Bytes read but not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// Opens an SSE stream over a raw connection: sends the GET, checks the head, and
/// returns the connection positioned at the start of the chunked body.
/// [`open_sse`], asserting that `wire` wrote the response.
pub async fn open_sse_on(wire: Wire, addr: SocketAddr, path: &str) -> (RawConn, Head) {
    let (conn, head) = open_sse(addr, path).await;
    wire.assert_wrote(&head);
    (conn, head)
}

pub async fn open_sse(addr: SocketAddr, path: &str) -> (RawConn, Head) {
    let mut conn = RawConn::connect(addr).await;
    conn.send_request("GET", path, &[("Accept", "text/event-stream")], b"")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200, "SSE response status");
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert!(
        head.is_chunked(),
        "an HTTP/1.1 SSE stream is chunked: {head:?}"
    );
    (conn, head)
}

/// A received SSE event and when it arrived.
#[derive(Debug, Clone)]
pub struct Arrived {
    /// The event.
    pub event: sse::Dispatched,
    /// When the chunk that completed it was read.
    pub at: Instant,
}

/// Reads an SSE body off `conn` and parses it as it arrives.
pub struct SseReader {
    /// The connection.
    pub conn: RawConn,
    /// The parser (its comments and reconnection time are visible).
    pub parser: sse::Parser,
    ready: std::collections::VecDeque<Arrived>,
    /// Set once the body ended (cleanly or not).
    pub ended: Option<Chunk>,
}

impl SseReader {
    /// Wraps a connection positioned at the start of an SSE body.
    pub fn new(conn: RawConn) -> SseReader {
        SseReader {
            conn,
            parser: sse::Parser::new(),
            ready: Default::default(),
            ended: None,
        }
    }

    /// Reads one more chunk and parses it; false once the body has ended.
    pub async fn read_more(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        match self.conn.read_chunk().await {
            Chunk::Data(d) => {
                let at = Instant::now();
                for event in self.parser.feed(&d) {
                    self.ready.push_back(Arrived { event, at });
                }
                true
            }
            other => {
                self.ended = Some(other);
                false
            }
        }
    }

    /// The next event, or `None` if the body ends first.
    pub async fn next_event(&mut self) -> Option<Arrived> {
        loop {
            if let Some(a) = self.ready.pop_front() {
                return Some(a);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }
}

/// A response read through hyper's client.
#[derive(Debug)]
pub struct Fetched {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Fetched {
    /// The body as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("visible ASCII header"))
    }
}

/// Sends one request over a fresh HTTP/1.1 connection with hyper's client and reads the
/// whole response.
pub async fn fetch(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> Fetched {
    within(READ_DEADLINE, "an HTTP/1.1 response", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        let res = sender.send_request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Fetched {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    })
    .await
}

/// `GET path` with hyper's client.
pub async fn get(addr: SocketAddr, path: &str) -> Fetched {
    fetch(addr, request("GET", addr, path, Bytes::new())).await
}

/// Builds a request with `Host` set.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// An HTTP/2 (prior knowledge, h2c) connection made with hyper's client.
pub async fn h2_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    within(READ_DEADLINE, "an h2c handshake", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender
    })
    .await
}

/// Spread of arrival times: the time between the first and the last.
pub fn spread(times: &[Instant]) -> Duration {
    match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.saturating_duration_since(*a),
        _ => Duration::ZERO,
    }
}

/// Reads a chunked body with the arrival time of each chunk (up to a clean end).
pub async fn read_timed_chunks(conn: &mut RawConn) -> Vec<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match conn.read_chunk().await {
            Chunk::Data(d) => out.push((Instant::now(), d)),
            Chunk::End => return out,
            Chunk::Eof => panic!("stream cut before its end; got {} chunks", out.len()),
        }
    }
}

/// Size of [`seq_chunk`]s.
pub const SEQ_CHUNK: usize = 1024;

/// A chunk whose bytes encode its sequence number, so that a reader can check order.
pub fn seq_chunk(seq: u64) -> Bytes {
    Bytes::from(seq.to_be_bytes().repeat(SEQ_CHUNK / 8))
}

/// Sends `seq_chunk(s)` for every `s` in `seqs` through `tx`, waiting for room each time,
/// then ends the stream: the tail of a producer after a slow reader resumed.
pub fn spawn_seq_producer(
    tx: rat_engine::StreamSender,
    seqs: std::ops::Range<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for s in seqs {
            tx.send(seq_chunk(s))
                .await
                .expect("send after the reader resumed");
        }
        tx.end();
    })
}

/// A hyper client connection, HTTP/1.1 or h2, for requests built with a `host` header
/// (h2 takes the authority from the URI instead, so it is removed there).
pub enum HttpClient {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl HttpClient {
    /// Sends `r` and waits for the response's head (5 s at most).
    pub async fn send(
        &mut self,
        r: http::Request<Full<Bytes>>,
    ) -> http::Response<hyper::body::Incoming> {
        let fut = async {
            match self {
                HttpClient::H1(c) => {
                    c.ready().await?;
                    c.send_request(r).await
                }
                HttpClient::H2(c) => {
                    let (mut parts, body) = r.into_parts();
                    parts.headers.remove("host");
                    c.send_request(http::Request::from_parts(parts, body)).await
                }
            }
        };
        within(Duration::from_secs(5), "a response", fut)
            .await
            .unwrap()
    }
}
