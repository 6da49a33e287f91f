//! A counting global allocator for the memory tests (`tls_memory.rs`, `h2_memory.rs`),
//! included by them alone (`#[path]`): it counts the live heap of the threads of a runtime
//! made by [`counted_runtime`], in all and by allocation size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Live allocations by size (the last slot counts every larger one).
const SIZES: usize = 20 * 1024;
static BY_SIZE: [AtomicIsize; SIZES + 1] = [const { AtomicIsize::new(0) }; SIZES + 1];

fn count(size: usize, n: isize) {
    BY_SIZE[size.min(SIZES)].fetch_add(n, Relaxed);
}

thread_local! {
    /// True on the counted runtime's threads: only their allocations are counted.
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

/// A runtime with one worker thread whose allocations are counted: the server's.
pub fn counted_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .unwrap()
}

/// The counted heap at one moment.
pub struct Snapshot {
    live: isize,
    sizes: Vec<isize>,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        Snapshot {
            live: LIVE.load(Relaxed),
            sizes: BY_SIZE.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }

    /// The heap added since this snapshot, per one of `n` things, printed by allocation
    /// size (allocations held by at least a tenth of them).
    pub fn held_per(&self, n: usize) -> isize {
        let held = (LIVE.load(Relaxed) - self.live) / n as isize;
        let mut listed = 0;
        for (size, c) in BY_SIZE.iter().enumerate() {
            let live = c.load(Relaxed) - self.sizes[size];
            if live * 10 >= n as isize {
                let per = live as f64 / n as f64;
                listed += (per * size as f64) as isize;
                eprintln!("  {size:>6} B x {per:.2} = {:.0} B", per * size as f64);
            }
        }
        eprintln!("  listed: {listed} B of {held} B");
        held
    }
}

/// A TLS server (self-signed for `localhost`) with a channel long-lived at `/news`, on a
/// [`counted_runtime`].
pub struct CountedTlsServer {
    pub rt: tokio::runtime::Runtime,
    pub server: rat_engine::ServerHandle,
    pub news: rat_engine::Channel,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

pub fn counted_tls_server() -> CountedTlsServer {
    use rat_engine::{App, Channel, ChannelOptions, Server, ServerConfig, TlsConfig};
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap();
    let news = Channel::new("news", ChannelOptions::default());
    let mut app = App::new();
    super::support::long_lived(&mut app, "/news", news.clone());
    let rt = counted_runtime();
    let config = ServerConfig::default().tls(tls);
    let server = rt
        .block_on(async { tokio::spawn(Server::bind("127.0.0.1:0", app, config)).await })
        .unwrap()
        .unwrap();
    CountedTlsServer {
        rt,
        server,
        news,
        der: c.cert.der().clone(),
    }
}
