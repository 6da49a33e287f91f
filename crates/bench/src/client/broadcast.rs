//! `broadcast` and `idle`: N subscribers on `/sse/broadcast`.
//!
//! `broadcast` measures how long all N take to connect (response head received), then over
//! the window counts events per spec, reads `{"seq":n,"t":ns}` to get publish-to-receive
//! latency on CLOCK_MONOTONIC and sequence gaps per subscriber, and reports delivered
//! events/s. Latency is taken twice: when the client read the bytes, and when they reached
//! its socket (the kernel's receive timestamp). Reads are decoded on another thread
//! (`decode.rs`), so this one only reads and stamps. With `--tls h2` the subscribers are
//! streams, `--streams-per-conn` (100) to each TLS connection. With several `--addr` (one
//! server in several processes) subscriber `i` (h2: connection `i`) goes to address
//! `i mod k`, and the result counts each address's subscribers and events (`per_addr`).
//! `idle` only connects N and holds them (draining whatever arrives unparsed), so
//! the runner can read the server's RSS per connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::conn::{get_request_with, HttpConn, Io, Stamp, Stamps};
use super::decode::{Decode, Format};
use super::{marker, measure_window, round, Args, Common, Phase};
use crate::http::Part;
use crate::stats::Histogram;
use crate::tls::Alpn;

struct Shared {
    phase: Cell<Phase>,
    /// Where body bytes go to be decoded (broadcast), or None (idle: drained unparsed).
    decode: RefCell<Option<Decode>>,
    /// Why the decoding could not keep up, if it could not.
    decode_error: RefCell<Option<String>>,
    connected: Cell<usize>,
    /// Connects that failed, or heads that were not 200.
    failed: Cell<usize>,
    /// Streams the server ended or broke after connecting.
    lost: Cell<usize>,
    last_connected_at: Cell<Option<Instant>>,
    connect_time: RefCell<Histogram>,
    /// Body bytes read inside the window.
    bytes: Cell<u64>,
    /// Per address (`--addr a,b`): subscribers connected.
    per_addr: Vec<Cell<usize>>,
}

fn bump<T: Copy + std::ops::Add<Output = T>>(c: &Cell<T>, by: T) {
    c.set(c.get() + by);
}

/// Runs `broadcast` (`parse`) or `idle` (`!parse`) and returns the JSON result.
pub async fn run(mut args: Args, parse: bool) -> Result<Value, String> {
    let common = Common::take_many(&mut args, 1000)?;
    let path: String = args.take("path", "/sse/broadcast".to_owned())?;
    let connect_timeout = Duration::from_secs_f64(args.take("connect-timeout", 60.0)?);
    // Connections in the handshake at once: a polite ramp rather than a SYN flood, so the
    // result does not hinge on each server's listen backlog.
    let concurrency: usize = args.take("connect-concurrency", 256)?;
    let headers: String = args.take("header", String::new())?;
    let decode: String = args.take("decode", String::new())?;
    if !matches!(decode.as_str(), "" | "gzip") {
        return Err(format!("--decode: {decode:?} is not supported (gzip)"));
    }

    let h2 = common.tls.is_some_and(|t| t.alpn == Alpn::H2);
    // HTTP/2: subscribers share connections, this many streams each.
    let per_conn = match args.take("streams-per-conn", 0usize)? {
        0 => 100,
        k if h2 => k,
        _ => return Err("--streams-per-conn needs --tls h2".into()),
    };
    args.finish()?;

    let n = common.connections;
    // The address of subscriber `i`: in turn, by subscriber (HTTP/1.1) or connection (h2).
    let k = common.addrs.len();
    let addr_of = move |i: usize| if h2 { (i / per_conn) % k } else { i % k };
    let shared = Rc::new(Shared {
        phase: Cell::default(),
        decode: RefCell::new(parse.then(|| {
            Decode::start(
                n,
                if decode == "gzip" {
                    Format::SseGzip
                } else {
                    Format::Sse
                },
            )
        })),
        decode_error: RefCell::default(),
        connected: Cell::default(),
        failed: Cell::default(),
        lost: Cell::default(),
        last_connected_at: Cell::default(),
        connect_time: RefCell::default(),
        bytes: Cell::default(),
        per_addr: common.addrs.iter().map(|_| Default::default()).collect(),
    });
    let gate = Rc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    if h2 {
        let request = Rc::new(h2_request(&path, &headers)?);
        for first in (0..n).step_by(per_conn) {
            let ids = first..(first + per_conn).min(n);
            let at = addr_of(first);
            let (shared, request, gate) = (shared.clone(), request.clone(), gate.clone());
            tokio::task::spawn_local(async move {
                h2_subscribers(ids, at, common, shared, request, &gate, deadline).await
            });
        }
    } else {
        let request = Rc::new(get_request_with(&path, &headers));
        for id in 0..n {
            let (shared, request, gate) = (shared.clone(), request.clone(), gate.clone());
            tokio::task::spawn_local(async move {
                subscriber(id, addr_of(id), common, &shared, &request, &gate, deadline).await
            });
        }
    }
    while shared.connected.get() + shared.failed.get() < n && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connected = shared.connected.get();
    let connect_s = shared
        .last_connected_at
        .get()
        .map_or(0.0, |t| (t - start).as_secs_f64());
    marker("connected");

    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    let mut result = json!({
        "subscribers": n,
        "protocol": match common.tls {
            None => "http/1.1",
            Some(t) if t.alpn == Alpn::H2 => "h2 over TLS",
            Some(_) => "http/1.1 over TLS",
        },
        "connections": if h2 { n.div_ceil(per_conn) } else { n },
        "connected": connected,
        "all_connected": connected == n,
        "connect_failed": shared.failed.get(),
        "connect_s": round(connect_s, 3),
        "connect_time_per_subscriber": shared.connect_time.borrow().summary_ms(),
        "lost": shared.lost.get(),
        "duration_s": round(elapsed, 3),
        "bytes_per_s": round(shared.bytes.get() as f64 / elapsed, 0),
    });
    if let Some(e) = shared.decode_error.take() {
        return Err(e);
    }
    // The subscribers' tasks stay behind (the process exits after the result); the stats
    // come from the decoding thread once it has decoded everything read in the window.
    let decoded = shared.decode.borrow_mut().take();
    let stats = decoded.map(|mut d| d.finish());
    let events = stats.as_ref().map(|s| s.events_per_sub());
    let map = result.as_object_mut().expect("object");
    map.insert(
        "per_addr".into(),
        per_addr(&shared, common, events.as_deref(), &addr_of),
    );
    if let Some(stats) = stats {
        map.extend(stats.json(connected, elapsed));
    }
    Ok(result)
}

/// Each address's subscribers connected and (`events`, per subscriber) events received in
/// the window.
fn per_addr(
    s: &Shared,
    common: Common,
    events: Option<&[u32]>,
    addr_of: &dyn Fn(usize) -> usize,
) -> Value {
    let mut sum = vec![0u64; common.addrs.len()];
    for (i, e) in events.unwrap_or_default().iter().enumerate() {
        sum[addr_of(i)] += u64::from(*e);
    }
    let list = common.addrs.iter().enumerate().map(|(a, addr)| {
        let mut one = json!({ "addr": addr.to_string(), "connected": s.per_addr[a].get() });
        if events.is_some() {
            one["events"] = sum[a].into();
        }
        one
    });
    Value::Array(list.collect())
}

/// One subscriber's stream, whichever protocol carries it: its head, then its body bytes.
struct Stream<'a> {
    id: usize,
    /// Index of its server address.
    at: usize,
    s: &'a Shared,
    began: Instant,
}

impl<'a> Stream<'a> {
    fn new(id: usize, at: usize, s: &'a Shared, began: Instant) -> Self {
        Self { id, at, s, began }
    }

    /// The response head arrived; returns whether it is a stream (status 200).
    fn head(&mut self, status: u16) -> bool {
        let s = self.s;
        if status != 200 {
            bump(&s.failed, 1);
            return false;
        }
        bump(&s.connected, 1);
        bump(&s.per_addr[self.at], 1);
        let t = Instant::now();
        s.last_connected_at.set(Some(t));
        s.connect_time
            .borrow_mut()
            .record((t - self.began).as_nanos() as u64);
        true
    }

    /// Body bytes read at `now`.
    fn body(&mut self, b: &[u8], now: Stamp) {
        let s = self.s;
        let measured = s.phase.get() == Phase::Measure;
        if measured {
            bump(&s.bytes, b.len() as u64);
        }
        if let Some(d) = &*s.decode.borrow() {
            if let Err(e) = d.push(self.id, measured, now, b) {
                s.decode_error.borrow_mut().get_or_insert(e);
            }
        }
    }
}

/// An HTTP/1.1 subscriber: one connection (plain or TLS) for one stream.
async fn subscriber(
    id: usize,
    at: usize,
    common: Common,
    s: &Shared,
    request: &[u8],
    gate: &Semaphore,
    deadline: tokio::time::Instant,
) {
    let Ok(permit) = gate.acquire().await else {
        return;
    };
    let began = Instant::now();
    let conn = HttpConn::connect_until(common.addrs[at], common.tls, Stamps::On, 8192, deadline);
    let mut conn = match conn.await {
        Ok(c) => c,
        Err(_) => return bump(&s.failed, 1),
    };
    if conn.send(request).await.is_err() {
        return bump(&s.failed, 1);
    }
    let mut permit = Some(permit);
    let mut stream = Stream::new(id, at, s, began);
    let mut streaming = false;
    // Returns only if the stream ends or breaks: a loss, since the client exits mid-stream.
    let _ = conn
        .read_response(|part, now| match part {
            Part::Head(status) => {
                drop(permit.take());
                streaming = stream.head(status);
            }
            Part::Body(b) => stream.body(b, now),
            Part::End => {}
        })
        .await;
    if permit.is_some() {
        bump(&s.failed, 1); // never got a head
    } else if streaming {
        bump(&s.lost, 1);
    }
}

/// HTTP/2 subscribers `ids`: one TLS connection carrying one stream each. The gate's
/// permit is held for the handshake, as an HTTP/1.1 subscriber holds it until its head.
async fn h2_subscribers(
    ids: std::ops::Range<usize>,
    at: usize,
    common: Common,
    s: Rc<Shared>,
    request: Rc<http::Request<()>>,
    gate: &Semaphore,
    deadline: tokio::time::Instant,
) {
    let Ok(permit) = gate.acquire().await else {
        return;
    };
    let began = Instant::now();
    let n = ids.len();
    let Ok(io) = Io::connect_until(common.addrs[at], common.tls, Stamps::On, deadline).await else {
        return bump(&s.failed, n);
    };
    let arrival = io.arrival();
    // Windows large enough that flow control never holds an event back: the client
    // releases what it read at once, and a 10 ms publish of ~40-byte events is far below.
    let handshake = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(io);
    let Ok((client, connection)) = handshake.await else {
        return bump(&s.failed, n);
    };
    drop(permit);
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    for id in ids {
        let (s, request, client) = (s.clone(), request.clone(), client.clone());
        let arrival = arrival.clone();
        tokio::task::spawn_local(async move {
            h2_stream(id, at, &s, &request, client, arrival, began).await
        });
    }
}

async fn h2_stream(
    id: usize,
    at: usize,
    s: &Shared,
    request: &http::Request<()>,
    client: h2::client::SendRequest<Bytes>,
    arrival: Option<Arc<AtomicU64>>,
    began: Instant,
) {
    let mut req = http::Request::new(());
    *req.method_mut() = request.method().clone();
    *req.uri_mut() = request.uri().clone();
    *req.headers_mut() = request.headers().clone();
    let response = match client.ready().await {
        Ok(mut client) => client.send_request(req, true).map(|(r, _)| r),
        Err(e) => Err(e),
    };
    let response = match response {
        Ok(r) => r.await,
        Err(e) => Err(e),
    };
    let Ok(response) = response else {
        return bump(&s.failed, 1); // never got a head
    };
    let mut stream = Stream::new(id, at, s, began);
    if !stream.head(response.status().as_u16()) {
        return;
    }
    let mut body = response.into_body();
    while let Some(Ok(data)) = body.data().await {
        // The connection's last read: no earlier than this frame's.
        let now = Stamp::now(arrival.as_deref());
        let _ = body.flow_control().release_capacity(data.len());
        stream.body(&data, now);
    }
    // The stream ended or broke: a loss, since the client exits mid-stream.
    bump(&s.lost, 1);
}

/// The h2 request for `path` with `headers` (`name: value` pairs separated by `|`).
fn h2_request(path: &str, headers: &str) -> Result<http::Request<()>, String> {
    let mut req = http::Request::get(format!("https://127.0.0.1{path}"));
    for h in headers.split('|').map(str::trim).filter(|h| !h.is_empty()) {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header: {h:?} is not `name: value`"))?;
        req = req.header(name.trim().to_ascii_lowercase(), value.trim());
    }
    req.body(()).map_err(|e| format!("bad request: {e}"))
}
