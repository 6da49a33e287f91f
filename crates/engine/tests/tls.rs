//! HTTPS: ALPN picks HTTP/2 or HTTP/1.1 on one port, and plain routes, SSE, channels with
//! replay, request bodies, client disconnects and graceful shutdown work over both; a
//! certificate swapped at run time is what new connections get; plain HTTP or garbage on
//! the TLS port costs only that connection, and a handshake that never comes is closed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rat_engine::{
    App, Channel, ChannelOptions, Event, Request, ServerConfig, SseResponse, TlsConfig,
};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{eventually, serve_with, within, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Cert {
        pem: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

fn tls_config(cert: &Cert) -> TlsConfig {
    TlsConfig::from_pem(cert.pem.as_bytes(), cert.key.as_bytes(), None).unwrap()
}

/// A TLS client that trusts `cert` and offers `alpn`.
async fn connect(addr: SocketAddr, cert: &Cert, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    within(
        Duration::from_secs(5),
        "the TLS handshake",
        support::tls_connector(&cert.der, alpn).connect(name, tcp),
    )
    .await
    .expect("handshake")
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;
type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h2(addr: SocketAddr, cert: &Cert) -> H2 {
    let tls = connect(addr, cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn h1(addr: SocketAddr, cert: &Cert) -> H1 {
    let tls = connect(addr, cert, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn req(method: &str, path: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

struct Fixture {
    server: rat_engine::ServerHandle,
    channel: Channel,
    gone: mpsc::UnboundedReceiver<()>,
}

async fn start(cert: &Cert) -> Fixture {
    let channel = Channel::new("news", ChannelOptions::default());
    let (gone_tx, gone) = mpsc::unbounded_channel();
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.post("/echo", |req: Request| async move { req.body().clone() })
        .unwrap();
    app.get("/count", |_req| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..3 {
                if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                    return;
                }
            }
            tx.end();
        });
        sse
    })
    .unwrap();
    app.get("/forever", move |_req| {
        let gone_tx = gone_tx.clone();
        async move {
            let sse = SseResponse::new();
            sse.send_event("open", "1").unwrap();
            let tx = sse.sender();
            tokio::spawn(async move {
                tx.stream().closed().await;
                let _ = gone_tx.send(());
            });
            sse
        }
    })
    .unwrap();
    app.get("/news", channel.clone()).unwrap();
    let config = ServerConfig::default().tls(tls_config(cert));
    Fixture {
        server: serve_with(app, config).await,
        channel,
        gone,
    }
}

async fn text(res: http::Response<hyper::body::Incoming>) -> String {
    let body = within(Duration::from_secs(5), "a body", res.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Reads SSE frames off `body` until `n` events (blank-line-ended frames) arrived.
async fn read_events(body: &mut hyper::body::Incoming, n: usize) -> String {
    let mut out = String::new();
    within(Duration::from_secs(5), "SSE events", async {
        while out.matches("\n\n").count() < n {
            let frame = body.frame().await.expect("more").expect("a frame");
            if let Ok(d) = frame.into_data() {
                out.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_streams_channels_and_disconnects_work_over_h2_and_http1() {
    let cert = self_signed();
    let mut f = start(&cert).await;
    let addr = f.server.local_addr();
    for proto in ["h2", "http/1.1"] {
        let mut c = if proto == "h2" {
            HttpClient::H2(h2(addr, &cert).await)
        } else {
            HttpClient::H1(h1(addr, &cert).await)
        };
        let want = if proto == "h2" {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let res = c.send(req("GET", "/hello", "")).await;
        assert_eq!(
            (res.status().as_u16(), res.version()),
            (200, want),
            "{proto}"
        );
        assert_eq!(text(res).await, "hello");
        let res = c.send(req("POST", "/echo", "a body")).await;
        assert_eq!(text(res).await, "a body", "{proto}");
        let res = c.send(req("GET", "/count", "")).await;
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(
            text(res).await,
            "data: n0\n\ndata: n1\n\ndata: n2\n\n",
            "{proto}"
        );

        // A channel over TLS, then a resume with Last-Event-ID.
        let res = c.send(req("GET", "/news", "")).await;
        let mut body = res.into_body();
        eventually(Duration::from_secs(2), "subscribed", || {
            f.channel.subscribers() == 1
        })
        .await;
        let first = f.channel.publish(Event::data_only("one")).unwrap();
        assert!(
            read_events(&mut body, 1).await.contains("data: one"),
            "{proto}"
        );
        drop(body);
        if proto == "http/1.1" {
            // The response was left unfinished: HTTP/1.1 needs a new connection.
            c = HttpClient::H1(h1(addr, &cert).await);
        }
        eventually(Duration::from_secs(2), "unsubscribed", || {
            f.channel.subscribers() == 0
        })
        .await;
        f.channel.publish(Event::data_only("two")).unwrap();
        let mut again = req("GET", "/news", "");
        again
            .headers_mut()
            .insert("last-event-id", first.parse().unwrap());
        let mut body = c.send(again).await.into_body();
        let replay = read_events(&mut body, 1).await;
        assert!(
            replay.contains("data: two") && !replay.contains("data: one"),
            "{proto}: {replay}"
        );
        drop(body);
        if proto == "http/1.1" {
            c = HttpClient::H1(h1(addr, &cert).await);
        }

        // The client leaving a stream reaches its producer.
        let res = c.send(req("GET", "/forever", "")).await;
        let mut body = res.into_body();
        read_events(&mut body, 1).await;
        if proto == "h2" {
            drop(body); // RST_STREAM; the connection stays
        } else {
            drop(body);
            drop(c);
        }
        within(
            Duration::from_secs(5),
            "the producer to see the client leave",
            f.gone.recv(),
        )
        .await
        .unwrap();
    }
    eventually(Duration::from_secs(3), "connections counted out", || {
        f.server.metrics().snapshot().active_connections == 0
    })
    .await;
}

/// Twenty SSE streams on one HTTP/2 connection (a browser caps HTTP/1.1 at six per origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_streams_share_one_h2_connection() {
    let cert = self_signed();
    let f = start(&cert).await;
    let c = h2(f.server.local_addr(), &cert).await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let mut c = c.clone();
        let res = within(
            Duration::from_secs(5),
            "a stream",
            c.send_request(
                http::Request::get("https://localhost/news")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
        bodies.push(res.into_body());
    }
    eventually(Duration::from_secs(2), "20 subscribers", || {
        f.channel.subscribers() == 20
    })
    .await;
    assert_eq!(f.server.metrics().snapshot().active_connections, 1);
    f.channel.publish(Event::data_only("all")).unwrap();
    for b in &mut bodies {
        assert!(read_events(b, 1).await.contains("data: all"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_certificate_is_what_new_connections_get() {
    let (a, b) = (self_signed(), self_signed());
    let tls = tls_config(&a);
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    let server = serve_with(app, ServerConfig::default().tls(tls.clone())).await;
    let addr = server.local_addr();
    let presented =
        |s: &TlsStream<TcpStream>| s.get_ref().1.peer_certificates().unwrap()[0].clone();
    let old = connect(addr, &a, &[b"h2"]).await;
    assert_eq!(presented(&old), a.der);
    tls.set_certificate(b.pem.as_bytes(), b.key.as_bytes(), None)
        .unwrap();
    let new = connect(addr, &b, &[b"h2"]).await;
    assert_eq!(presented(&new), b.der);
    // The connection made before keeps working.
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(old))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = send
        .send_request(
            http::Request::get("https://localhost/hello")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(text(res).await, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_or_garbage_on_the_tls_port_closes_only_that_connection() {
    let cert = self_signed();
    let f = start(&cert).await;
    let addr = f.server.local_addr();
    for junk in [
        &b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 64][..],
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let closed = within(Duration::from_secs(5), "the server to close", async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue, // a TLS alert
                }
            }
        })
        .await;
        assert!(closed);
    }
    let mut c = HttpClient::H2(h2(addr, &cert).await);
    assert_eq!(text(c.send(req("GET", "/hello", "")).await).await, "hello");
}

/// A client that connects and never starts the handshake is closed after 10 s.
#[tokio::test(start_paused = true)]
async fn a_handshake_that_does_not_come_is_closed_after_ten_seconds() {
    let cert = self_signed();
    let f = start(&cert).await;
    let mut s = TcpStream::connect(f.server.local_addr()).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_tls_streams_and_completes() {
    let cert = self_signed();
    let f = start(&cert).await;
    let mut c = HttpClient::H2(h2(f.server.local_addr(), &cert).await);
    let res = c.send(req("GET", "/forever", "")).await;
    let mut body = res.into_body();
    read_events(&mut body, 1).await;
    let shutdown = tokio::spawn(f.server.shutdown(Duration::from_millis(200)));
    let rest = within(Duration::from_secs(5), "the stream's end", body.collect()).await;
    assert!(rest.is_ok(), "an SSE stream ends cleanly at shutdown");
    within(Duration::from_secs(5), "shutdown", shutdown)
        .await
        .unwrap();
}

#[tokio::test]
async fn websockets_work_over_tls_handler_and_channel_routes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Wire;
    let cert = self_signed();
    let news = Channel::new("news", ChannelOptions::default());
    let mut app = App::new();
    support::ws_echo(&mut app, "/echo");
    app.ws_channel("/news", news.clone()).unwrap();
    let config = ServerConfig {
        tls: Some(tls_config(&cert)),
        ..ServerConfig::default()
    };
    let server = serve_with(app, config).await;
    let addr = server.local_addr();
    let open = |path: &'static str| {
        let cert = &cert;
        async move {
            let tls = connect(addr, cert, &[b"http/1.1"]).await;
            let url = format!("wss://localhost{path}");
            let (ws, res) = within(
                Duration::from_secs(5),
                "the upgrade",
                tokio_tungstenite::client_async(url, tls),
            )
            .await
            .expect("upgrade");
            assert_eq!(res.status(), 101);
            ws
        }
    };
    let mut echo = open("/echo").await;
    for n in [0usize, 125, 70_000] {
        let text: String = "x".repeat(n);
        echo.send(Wire::text(text.clone())).await.unwrap();
        let got = within(Duration::from_secs(5), "the echo", echo.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Wire::text(text));
    }
    let mut sub = open("/news").await;
    eventually(Duration::from_secs(5), "the subscriber", || {
        news.subscribers() == 1
    })
    .await;
    news.publish(Event::data_only("over tls")).unwrap();
    let got = within(Duration::from_secs(5), "the event", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Wire::text("over tls"));
    // The close handshake, then the TLS session's own end: a `close_notify` (rustls reads
    // a connection closed without one as an unexpected EOF).
    echo.close(None).await.unwrap();
    let reply = within(Duration::from_secs(5), "the close reply", echo.next()).await;
    assert!(
        matches!(reply, Some(Ok(Wire::Close(_)))),
        "the close reply, not {reply:?}"
    );
    let mut tls = echo.into_inner();
    let mut rest = [0u8; 16];
    let end = within(Duration::from_secs(5), "the end", tls.read(&mut rest)).await;
    assert_eq!(end.map_err(|e| e.kind()), Ok(0), "a clean TLS close");
    server.shutdown(Duration::from_secs(1)).await;
}
