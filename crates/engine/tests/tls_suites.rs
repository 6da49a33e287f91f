//! Every cipher suite the server offers carries requests, request bodies of many records,
//! responses and a channel's events both ways, over HTTP/1.1 (the direct path and its
//! sink) and h2: the TLS 1.3 suites' records are the engine's after the handshake
//! (`tls/records.rs`), the TLS 1.2 ones rustls's.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rat_engine::{App, Channel, ChannelOptions, Event, Request, ServerConfig, TlsConfig};
use rustls::crypto::ring::cipher_suite as suites;
use rustls::pki_types::ServerName;
use rustls::SupportedCipherSuite;
use support::{eventually, serve_with, within, HttpClient};
use tokio::net::TcpStream;

/// A client that trusts `der`, offers `alpn` and only `suite`.
async fn connect(
    addr: std::net::SocketAddr,
    der: &rustls::pki_types::CertificateDer<'static>,
    suite: SupportedCipherSuite,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut provider = (*support::tls_provider()).clone();
    provider.cipher_suites = vec![suite];
    let connector = support::tls_connector_with(Arc::new(provider), der, &[alpn]);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(
        Duration::from_secs(5),
        "the TLS handshake",
        connector.connect(name, tcp),
    )
    .await
    .expect("handshake");
    let negotiated = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(negotiated, suite.suite());
    tls
}

fn req(method: &str, path: &str, body: Bytes) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(body))
        .unwrap()
}

async fn body_of(res: http::Response<hyper::body::Incoming>) -> Bytes {
    within(Duration::from_secs(5), "a body", res.into_body().collect())
        .await
        .unwrap()
        .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offered_suite_carries_requests_bodies_and_events_over_both_protocols() {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (pem, key, der) = (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    );
    let channel = Channel::new("news", ChannelOptions::default());
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.post("/echo", |req: Request| async move { req.body().clone() })
        .unwrap();
    app.get("/news", channel.clone()).unwrap();
    let tls = TlsConfig::from_pem(pem.as_bytes(), key.as_bytes(), None).unwrap();
    let server = serve_with(app, ServerConfig::default().tls(tls)).await;
    let addr = server.local_addr();

    // 100 KiB: several records each way.
    let big: Bytes = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let all = [
        suites::TLS13_AES_128_GCM_SHA256,
        suites::TLS13_AES_256_GCM_SHA384,
        suites::TLS13_CHACHA20_POLY1305_SHA256,
        suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    for suite in all {
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let what = format!("{:?} over {}", suite.suite(), String::from_utf8_lossy(alpn));
            let io = TokioIo::new(connect(addr, &der, suite, alpn).await);
            let mut client = if alpn == b"h2" {
                let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                HttpClient::H2(s)
            } else {
                let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                HttpClient::H1(s)
            };
            let res = client.send(req("GET", "/hello", Bytes::new())).await;
            assert_eq!(body_of(res).await, "hello", "{what}");
            let res = client.send(req("POST", "/echo", big.clone())).await;
            assert!(
                body_of(res).await == big,
                "{what}: the body came back changed"
            );

            let res = client.send(req("GET", "/news", Bytes::new())).await;
            let mut body = res.into_body();
            eventually(Duration::from_secs(2), "subscribed", || {
                channel.subscribers() == 1
            })
            .await;
            for i in 0..3 {
                channel.publish(Event::data_only(format!("e{i}"))).unwrap();
            }
            let mut got = String::new();
            within(Duration::from_secs(5), "events", async {
                while got.matches("\n\n").count() < 3 {
                    let frame = body.frame().await.expect("more").expect("a frame");
                    if let Ok(d) = frame.into_data() {
                        got.push_str(std::str::from_utf8(&d).unwrap());
                    }
                }
            })
            .await;
            let data: Vec<&str> = got.lines().filter(|l| l.starts_with("data: ")).collect();
            assert_eq!(data, ["data: e0", "data: e1", "data: e2"], "{what}");
            drop(body);
            drop(client);
            eventually(Duration::from_secs(2), "unsubscribed", || {
                channel.subscribers() == 0
            })
            .await;
        }
    }
    server.shutdown(Duration::from_secs(2)).await;
}
