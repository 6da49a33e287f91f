//! Heap held by idle TLS subscribers: a counting allocator measures the bytes a server
//! keeps per open TLS HTTP/1.1 subscriber of a channel that has nothing to send. The
//! server runs on its own runtime, whose threads alone are counted (the rustls clients
//! run in the same process).

// The counting allocator is the one unsafe item here: GlobalAlloc is an unsafe trait.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rat_engine::{App, Channel, ChannelOptions, Server, ServerConfig, TlsConfig};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Heap an idle TLS subscriber may keep on the server: rustls's unbuffered session (its
/// state, and the two traffic keys unexpanded: `tls::keys`), the connection's task and the
/// subscriber's queue, with no buffer at all: no record buffer of rustls's (a buffered
/// session keeps 4 KiB once it has read), no read or write buffer of the engine's or
/// hyper's (4.0 KiB measured in a debug build; ring's expanded keys would add 1 KiB).
const LIMIT: isize = 4352;

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

    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(support::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let n = 300;
    let held = client_rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        // One subscriber first, so that what the first one initialises is not counted.
        let warm = subscribe(addr, &connector).await;
        settle().await;
        let before = LIVE.load(Relaxed);
        let sizes_before: Vec<isize> = BY_SIZE.iter().map(|c| c.load(Relaxed)).collect();
        let mut subs = Vec::with_capacity(n);
        for _ in 0..n {
            subs.push(subscribe(addr, &connector).await);
        }
        settle().await;
        assert_eq!(news.subscribers(), n + 1, "every subscriber is open");
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
