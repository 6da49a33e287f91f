//! Heap held by idle TLS subscribers: a counting allocator measures the bytes a server
//! keeps per open TLS HTTP/1.1 subscriber of a channel that has nothing to send. The
//! server runs on its own runtime, whose threads alone are counted (the rustls clients
//! run in the same process).

// The counting allocator is the one unsafe item here: GlobalAlloc is an unsafe trait.
#![allow(unsafe_code)]

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Heap an idle TLS 1.3 subscriber may keep on the server: the engine's record layer (two
/// traffic keys unexpanded and rustls's key schedule: `tls::records`), the connection's
/// task and the subscriber's queue, with no buffer at all: no record buffer of rustls's (a
/// buffered session keeps 4 KiB once it has read), no read or write buffer of the engine's
/// or hyper's (2,736 B measured in a debug build; rustls's whole session would add 1.3
/// KiB).
const LIMIT: isize = 3072;

/// A TLS HTTP/1.1 subscriber of `/news`, its response head read.
async fn subscribe(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /news HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tls.read(&mut b).await.unwrap(), 1, "EOF before the head");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "not a 200");
    tls
}

#[test]
fn an_idle_tls_subscriber_holds_little_heap() {
    let s = counting::counted_tls_server();
    let (server_rt, server, news, der) = (s.rt, s.server, s.news, s.der);
    let addr = server.local_addr();

    let connector = support::tls_connector(&der, &[]);
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let n = 300;
    let held = client_rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        // One subscriber first, so that what the first one initialises is not counted.
        let warm = subscribe(addr, &connector).await;
        settle().await;
        let before = counting::Snapshot::take();
        let mut subs = Vec::with_capacity(n);
        for _ in 0..n {
            subs.push(subscribe(addr, &connector).await);
        }
        settle().await;
        assert_eq!(news.subscribers(), n + 1, "every subscriber is open");
        // What one subscriber keeps, by allocation size.
        let held = before.held_per(n);
        drop((warm, subs));
        held
    });
    eprintln!("heap per idle TLS subscriber: {held} B");
    eprintln!(
        "size_of: ServerConnection {} B, TlsStream {} B, UnbufferedServerConnection {} B",
        std::mem::size_of::<rustls::ServerConnection>(),
        std::mem::size_of::<tokio_rustls::server::TlsStream<TcpStream>>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>()
    );
    assert!(held <= LIMIT, "{held} B per idle TLS subscriber");
    server_rt.block_on(server.shutdown(Duration::from_millis(100)));
}
