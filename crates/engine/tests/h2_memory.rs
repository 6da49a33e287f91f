//! Heap held by idle h2 subscribers: a counting allocator measures the bytes a server
//! keeps per open HTTP/2 stream (over TLS, 100 streams per connection) subscribed to a
//! channel that has nothing to send. The server runs on its own runtime, whose threads
//! alone are counted (the h2 clients run in the same process).

// The counting allocator is the one unsafe item here: GlobalAlloc is an unsafe trait.
#![allow(unsafe_code)]

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Heap an idle h2 subscriber may keep on the server: h2's stream state (its slot in the
/// connection's stream store), the stream's task and its handle, the subscriber's queue,
/// and a hundredth of its connection (TLS session, h2's buffers): 1,806 B measured in a
/// debug build, of which 891 B in allocations of its own.
const LIMIT: isize = 2560;

const STREAMS: usize = 100;

/// An h2 connection over TLS with `n` streams subscribed to `/news`, their heads read.
async fn subscribe(
    addr: std::net::SocketAddr,
    der: &rustls::pki_types::CertificateDer<'static>,
    n: usize,
) -> (h2::client::SendRequest<Bytes>, Vec<h2::RecvStream>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = support::tls_connector(der, &[b"h2"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::get("https://localhost/news")
            .body(())
            .unwrap();
        let (res, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(req, true)
            .unwrap();
        let res = res.await.unwrap();
        assert_eq!(res.status(), 200);
        bodies.push(res.into_body());
    }
    (send, bodies)
}

#[test]
fn an_idle_h2_subscriber_holds_little_heap() {
    let s = counting::counted_tls_server();
    let (server_rt, server, news, der) = (s.rt, s.server, s.news, s.der);
    let addr = server.local_addr();
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let conns = 3;
    let n = conns * STREAMS;
    let held = client_rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        // One connection first, so that what the first one initialises is not counted.
        let warm = subscribe(addr, &der, STREAMS).await;
        settle().await;
        let before = counting::Snapshot::take();
        let mut subs = Vec::with_capacity(conns);
        for _ in 0..conns {
            subs.push(subscribe(addr, &der, STREAMS).await);
        }
        settle().await;
        assert_eq!(news.subscribers(), n + STREAMS, "every subscriber is open");
        // What one subscriber keeps, by allocation size.
        let held = before.held_per(n);
        drop((warm, subs));
        held
    });
    eprintln!("heap per idle h2 subscriber: {held} B");
    assert!(held <= LIMIT, "{held} B per idle h2 subscriber");
    server_rt.block_on(server.shutdown(Duration::from_millis(100)));
}
