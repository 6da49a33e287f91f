//! Heap held by idle h2 subscribers: a counting allocator measures the bytes a server
//! keeps per open HTTP/2 stream (over TLS, 100 streams per connection) subscribed to a
//! channel that has nothing to send. The server runs on its own runtime, whose threads
//! alone are counted (the h2 clients run in the same process).

// The counting allocator is the one unsafe item here: GlobalAlloc is an unsafe trait.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rat_engine::{App, Channel, ChannelOptions, Server, ServerConfig, TlsConfig};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Heap an idle h2 subscriber may keep on the server: h2's stream state (its slot in the
/// connection's stream store), the stream's task and its handle, the subscriber's queue,
/// and a hundredth of its connection (TLS session, h2's buffers): 1,806 B measured in a
/// debug build, of which 891 B in allocations of its own.
const LIMIT: isize = 2560;

const STREAMS: usize = 100;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Live allocations by size (the last slot counts every larger one).
const SIZES: usize = 20 * 1024;
static BY_SIZE: [AtomicIsize; SIZES + 1] = [const { AtomicIsize::new(0) }; SIZES + 1];

fn count(size: usize, n: isize) {
    BY_SIZE[size.min(SIZES)].fetch_add(n, Relaxed);
}

thread_local! {
    /// True on the server's runtime threads: only their allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
            count(layout.size(), 1);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
            count(layout.size(), -1);
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
            count(layout.size(), -1);
            count(new_size, 1);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

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
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap();
    let news = Channel::new("news", ChannelOptions::default());
    let mut app = App::new();
    support::long_lived(&mut app, "/news", news.clone());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt
        .block_on(async {
            tokio::spawn(Server::bind(
                "127.0.0.1:0",
                app,
                ServerConfig::default().tls(tls),
            ))
            .await
        })
        .unwrap()
        .unwrap();
    let addr = server.local_addr();
    let der = c.cert.der().clone();
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let conns = 3;
    let n = conns * STREAMS;
    let held = client_rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        // One connection first, so that what the first one initialises is not counted.
        let warm = subscribe(addr, &der, STREAMS).await;
        settle().await;
        let before = LIVE.load(Relaxed);
        let sizes_before: Vec<isize> = BY_SIZE.iter().map(|c| c.load(Relaxed)).collect();
        let mut subs = Vec::with_capacity(conns);
        for _ in 0..conns {
            subs.push(subscribe(addr, &der, STREAMS).await);
        }
        settle().await;
        assert_eq!(news.subscribers(), n + STREAMS, "every subscriber is open");
        let held = (LIVE.load(Relaxed) - before) / n as isize;
        // What one subscriber keeps, by allocation size: allocations held by at least a
        // tenth of the subscribers.
        let mut listed = 0;
        for (size, c) in BY_SIZE.iter().enumerate() {
            let live = c.load(Relaxed) - sizes_before[size];
            if live * 10 >= n as isize {
                let per = live as f64 / n as f64;
                listed += (per * size as f64) as isize;
                eprintln!("  {size:>6} B x {per:.2} = {:.0} B", per * size as f64);
            }
        }
        eprintln!("  listed: {listed} B of {held} B");
        drop((warm, subs));
        held
    });
    eprintln!("heap per idle h2 subscriber: {held} B");
    assert!(held <= LIMIT, "{held} B per idle h2 subscriber");
    server_rt.block_on(server.shutdown(Duration::from_millis(100)));
}
