//! TLS HTTP/1.1 (ALPN `http/1.1`, or none) on the engine's direct path: long-lived routes
//! are written by the engine itself, sealed for the connection, as on a plain socket;
//! everything else on the same connection is handed to hyper, pipelined requests
//! included; a channel reaches its TLS subscribers and notices them leave; graceful
//! shutdown ends a TLS stream cleanly. The clients are rustls, speaking raw bytes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::{
    App, Channel, ChannelOptions, Event, Handler, Request, RouteOptions, ServerConfig, SseResponse,
    TlsConfig,
};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{eventually, serve_with, within, Head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const LONG: RouteOptions = RouteOptions {
    stream_body: false,
    body_limit: None,
    long_lived: true,
    stream: false,
    max_streams: None,
    cors: rat_engine::cors::RouteCors::Inherit,
    compress: rat_engine::compress::RouteCompression::Inherit,
};

fn long_lived(app: &mut App, path: &str, handler: impl Handler) {
    app.route_with(Method::GET, path, Arc::new(handler), LONG)
        .unwrap();
}

struct Fixture {
    server: rat_engine::ServerHandle,
    channel: Channel,
    der: CertificateDer<'static>,
}

/// `/count` (long-lived): three events and the end. `/forever` (long-lived): one event,
/// then open. `/ch` (long-lived): a channel. `/hello`: plain text.
async fn start() -> Fixture {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (pem, key) = (c.cert.pem(), c.signing_key.serialize_pem());
    let tls = TlsConfig::from_pem(pem.as_bytes(), key.as_bytes(), None).unwrap();
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    long_lived(&mut app, "/count", |_req: Request| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                    return;
                }
            }
            tx.end();
        });
        sse
    });
    long_lived(&mut app, "/forever", |_req: Request| async {
        let sse = SseResponse::new();
        sse.send_event("open", "1").unwrap();
        // Kept open until the client leaves or the server shuts down.
        std::mem::forget(sse.sender());
        sse
    });
    let channel = Channel::new("ch", ChannelOptions::default());
    long_lived(&mut app, "/ch", channel.clone());
    Fixture {
        server: serve_with(app, ServerConfig::default().tls(tls)).await,
        channel,
        der: c.cert.der().clone(),
    }
}

#[allow(deprecated)] // the ring provider: see the engine's tls module
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A raw HTTP/1.1 connection over TLS, offering `alpn`.
struct Raw {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(f: &Fixture, alpn: &[&[u8]]) -> Raw {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(f.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(f.server.local_addr()).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
        let tls = within(Duration::from_secs(5), "the TLS handshake", connect)
            .await
            .unwrap();
        Raw {
            tls,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    async fn get(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.send(req.as_bytes()).await;
    }

    /// Reads until `buf` holds `needle`; false at EOF.
    async fn fill_until(&mut self, needle: &[u8]) -> bool {
        let read = async {
            while !self.buf.windows(needle.len()).any(|w| w == needle) {
                let mut tmp = [0u8; 4096];
                match self.tls.read(&mut tmp).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                }
            }
            true
        };
        within(Duration::from_secs(5), "bytes from the server", read).await
    }

    /// Takes `buf` up to and including the first `needle`.
    async fn take_through(&mut self, needle: &[u8]) -> String {
        assert!(
            self.fill_until(needle).await,
            "EOF before {:?}",
            String::from_utf8_lossy(needle)
        );
        let at = self
            .buf
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let taken: Vec<u8> = self.buf.drain(..at + needle.len()).collect();
        String::from_utf8(taken).unwrap()
    }

    async fn head(&mut self) -> Head {
        let text = self.take_through(b"\r\n\r\n").await;
        let mut lines = text.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        Head {
            status: status.parse().unwrap(),
            headers: lines
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect(),
        }
    }

    /// True once the server has closed the connection (within 5 s).
    async fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.tls.read(&mut tmp)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_routes_are_served_directly_over_tls_and_the_rest_by_hyper() {
    let f = start().await;
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut c = Raw::connect(&f, alpn).await;
        c.get("/count").await;
        let head = c.head().await;
        assert_eq!(head.status, 200);
        assert!(support::wrote_directly(&head), "served directly: {head:?}");
        assert!(head.is_chunked());
        let body = c.take_through(b"0\r\n\r\n").await;
        assert_eq!(
            body, "a\r\ndata: n0\n\n\r\na\r\ndata: n1\n\n\r\na\r\ndata: n2\n\n\r\n0\r\n\r\n",
            "ALPN {alpn:?}"
        );
        // The same connection: a plain route goes to hyper, after the bytes read here.
        c.get("/hello").await;
        let head = c.head().await;
        assert_eq!(head.status, 200);
        assert!(!support::wrote_directly(&head), "hyper: {head:?}");
        assert_eq!(c.take_through(b"hello").await, "hello");
    }
    // Pipelined: a direct response, then hyper's, both from one write.
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    c.send(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(support::wrote_directly(&c.head().await));
    c.take_through(b"0\r\n\r\n").await;
    assert!(!support::wrote_directly(&c.head().await));
    assert_eq!(c.take_through(b"hello").await, "hello");
    drop(c);
    eventually(Duration::from_secs(3), "connections counted out", || {
        f.server.metrics().snapshot().active_connections == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_reaches_tls_subscribers_directly_and_sees_them_leave() {
    let f = start().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
        c.get("/ch").await;
        let head = c.head().await;
        assert!(support::wrote_directly(&head), "{head:?}");
        subs.push(c);
    }
    eventually(Duration::from_secs(2), "subscribed", || {
        f.channel.subscribers() == 3
    })
    .await;
    for i in 0..20 {
        f.channel
            .publish(Event::data_only(format!("e{i}")))
            .unwrap();
    }
    for c in &mut subs {
        let got = c.take_through(b"data: e19\n\n").await;
        let events: Vec<&str> = got.matches("data: e").collect();
        assert_eq!(events.len(), 20, "every event, in order: {got}");
        assert!(got.find("e0\n").unwrap() < got.find("e19\n").unwrap());
    }
    subs.pop();
    eventually(Duration::from_secs(3), "the leaver unsubscribed", || {
        f.channel.subscribers() == 2
    })
    .await;
    f.channel.publish(Event::data_only("after")).unwrap();
    for c in &mut subs {
        c.take_through(b"data: after\n\n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_a_direct_tls_stream_cleanly() {
    let f = start().await;
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    c.get("/forever").await;
    assert!(support::wrote_directly(&c.head().await));
    c.take_through(b"data: 1\n\n").await;
    let shutdown = tokio::spawn(f.server.shutdown(Duration::from_millis(500)));
    assert!(c.closed().await, "the connection closes");
    assert!(
        c.buf.ends_with(b"0\r\n\r\n"),
        "a clean chunked end: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    within(Duration::from_secs(5), "shutdown", shutdown)
        .await
        .unwrap();
}
