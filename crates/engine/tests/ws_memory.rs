//! Heap held by WebSockets: a counting allocator measures the bytes a server keeps per
//! open, idle socket, and what a client flooding pings without reading its pongs makes it
//! hold (the clients are raw sockets, which allocate nothing). One measurement at a time.

// The counting allocator is the one unsafe item here: GlobalAlloc is an unsafe trait.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rat_engine::ws::{self, WsOptions};
use rat_engine::{App, Channel, ChannelOptions, Request};
use support::serve;

/// Heap an idle socket may keep on the server: its connection task, tokio's registration,
/// the send queue's state (no tungstenite state, no read or write buffer while idle).
const LIMIT: isize = 1024;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Held by each test: the count is the whole process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upgrades a blocking socket by hand (no heap: the head is read into a stack buffer).
fn upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET ").unwrap();
    s.write_all(path.as_bytes()).unwrap();
    s.write_all(
        b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 512];
    let mut n = 0;
    while !head[..n].ends_with(b"\r\n\r\n") {
        assert!(n < head.len(), "a 101 head too long");
        let got = s.read(&mut head[n..n + 1]).unwrap();
        assert_eq!(got, 1, "the connection ended before the 101 head");
        n += 1;
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "not a 101");
    s
}

/// Heap bytes the server keeps per idle socket on `path`, over `n` sockets; `open()`
/// counts the sockets the server has open.
async fn held_per_socket(
    addr: SocketAddr,
    path: &'static str,
    n: usize,
    open: impl Fn() -> usize,
) -> isize {
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    // One socket first, so that what the first one initialises is not counted.
    let warm = tokio::task::spawn_blocking(move || upgrade(addr, path))
        .await
        .unwrap();
    settle().await;
    let mut socks = Vec::with_capacity(n);
    let before = LIVE.load(Relaxed);
    let socks = tokio::task::spawn_blocking(move || {
        for _ in 0..n {
            socks.push(upgrade(addr, path));
        }
        socks
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(open(), n + 1, "every socket on {path} is open");
    let held = (LIVE.load(Relaxed) - before) / n as isize;
    drop((warm, socks));
    // Closed before the next measurement, whose window their frees would fall in.
    for _ in 0..100 {
        if open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open(), 0, "every socket on {path} is closed");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_holds_little_heap() {
    let _one = ONE_AT_A_TIME.lock().await;
    let news = Channel::new("news", ChannelOptions::default());
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (o, c) = (opened.clone(), closed.clone());
    let mut app = App::new();
    // As the Node binding registers a WebSocket route: long-lived, a stream route.
    let cb = move |req: Request| {
        o.fetch_add(1, Relaxed);
        let c = c.clone();
        async move {
            // The default options, idle timeout included.
            let options = WsOptions::default();
            ws::accept_with_callbacks(
                req.headers(),
                req.version(),
                req.remote_addr(),
                options,
                |_, _| {},
                move |_| {
                    c.fetch_add(1, Relaxed);
                },
            )
        }
    };
    support::ws::binding_route(&mut app, "/cb", Arc::new(cb));
    // One server per measurement: what the first frees once shut down (the registry's
    // handles of closed sockets) is not counted in the second's window.
    let server = serve(app).await;
    let open = || opened.load(Relaxed) - closed.load(Relaxed);
    let cb = held_per_socket(server.local_addr(), "/cb", 500, open).await;
    server.shutdown(Duration::from_secs(1)).await;
    let mut app = App::new();
    app.ws_channel("/news", news.clone()).unwrap();
    let server = serve(app).await;
    let sub = held_per_socket(server.local_addr(), "/news", 500, || news.subscribers()).await;
    eprintln!("heap per idle socket: callbacks {cb} B, channel subscriber {sub} B");
    assert!(cb <= LIMIT, "{cb} B per idle socket with callbacks");
    assert!(sub <= LIMIT, "{sub} B per idle channel subscriber");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_whose_pongs_are_not_read_do_not_pile_up_on_the_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut app = App::new();
    support::ws_echo(&mut app, "/echo");
    let server = serve(app).await;
    let addr = server.local_addr();
    // 1,024 masked pings of 125 bytes, sent over and over (64 MiB in all, or until a write
    // waits for 2 s), the 127-byte pongs left unread.
    let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125).map(|i| 7 ^ [1, 2, 3, 4][i % 4]));
    let pings = ping.repeat(1024);
    let s = tokio::task::spawn_blocking(move || upgrade(addr, "/echo"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = LIVE.load(Relaxed);
    let (s, written, pings) = tokio::task::spawn_blocking(move || {
        let mut s = s;
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut written = 0usize;
        while written < 64 << 20 {
            match s.write(&pings[written % pings.len()..]) {
                Ok(n) => written += n,
                Err(_) => break, // the server stopped reading
            }
        }
        (s, written, pings)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = LIVE.load(Relaxed) - before;
    eprintln!("ping flood: {written} bytes of pings read, the server holds {held} B more");
    assert!(written >= 4 << 20, "only {written} bytes of pings read");
    assert!(
        held < 512 << 10,
        "{held} B held after {written} bytes of pings"
    );

    // The client reads at last: pongs, then the echo of a message sent after the pings.
    const ECHO: &[u8] = b"\x81\x05after";
    let got = tokio::task::spawn_blocking(move || {
        let mut s = s;
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // What comes until nothing does for 300 ms.
        while let Ok(n) = s.read(&mut buf) {
            assert!(n > 0, "the connection ended");
            got.extend_from_slice(&buf[..n]);
            assert!(got.len() < 256 << 20, "pongs without end");
        }
        // The end of the ping under way, then a message.
        let at = written % ping.len();
        if at > 0 {
            s.write_all(&pings[written % pings.len()..][..ping.len() - at])
                .unwrap();
        }
        let mut text = vec![0x81, 0x80 | 5, 9, 9, 9, 9];
        text.extend(b"after".iter().map(|b| b ^ 9));
        s.write_all(&text).unwrap();
        // Until the echo (pongs may come before it); within 10 s.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while !got.ends_with(ECHO) {
            let n = s.read(&mut buf).expect("the echo within 10 s");
            assert!(n > 0, "the connection ended");
            got.extend_from_slice(&buf[..n]);
        }
        got
    })
    .await
    .unwrap();
    let pong = [&[0x8a, 125][..], &[7; 125]].concat();
    let pongs = &got[..got.len() - ECHO.len()];
    assert!(!pongs.is_empty() && pongs.len() % pong.len() == 0);
    assert!(
        pongs.chunks(pong.len()).all(|c| c == pong),
        "only pongs before it"
    );
    server.shutdown(Duration::from_secs(1)).await;
}
