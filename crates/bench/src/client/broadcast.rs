//! `broadcast` and `idle`: N subscribers on `/sse/broadcast`.
//!
//! `broadcast` measures how long all N take to connect (response head received), then over
//! the window counts events per spec, reads `{"seq":n,"t":ns}` to get publish-to-receive
//! latency on CLOCK_MONOTONIC and sequence gaps per subscriber, and reports delivered
//! events/s. `idle` only connects N and holds them (draining whatever arrives unparsed), so
//! the runner can read the server's RSS per connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::conn::{get_request_with, HttpConn};
use super::{marker, measure_window, round, Args, Common, Phase};
use crate::http::Part;
use crate::sse::{json_u64, SseParser};
use crate::stats::Histogram;

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    parse: bool,
    /// The stream is gzip-coded (`--decode gzip`): bytes count as they arrive, events
    /// are parsed once inflated.
    gzip: bool,
    connected: Cell<usize>,
    /// Connects that failed, or heads that were not 200.
    failed: Cell<usize>,
    /// Streams the server ended or broke after connecting.
    lost: Cell<usize>,
    last_connected_at: Cell<Option<Instant>>,
    connect_time: RefCell<Histogram>,
    // Counted inside the window only:
    events: Cell<u64>,
    bytes: Cell<u64>,
    gaps: Cell<u64>,
    out_of_order: Cell<u64>,
    unparsable: Cell<u64>,
    /// Events stamped later than they were read: clocks disagree (should stay 0).
    clock_skew: Cell<u64>,
    min_seq: Cell<u64>,
    max_seq: Cell<u64>,
    latency: RefCell<Histogram>,
    /// Per subscriber: events and gaps in the window.
    per_sub: Vec<(Cell<u32>, Cell<u32>)>,
}

fn bump<T: Copy + std::ops::Add<Output = T>>(c: &Cell<T>, by: T) {
    c.set(c.get() + by);
}

/// Runs `broadcast` (`parse`) or `idle` (`!parse`) and returns the JSON result.
pub async fn run(mut args: Args, parse: bool) -> Result<Value, String> {
    let common = Common::take(&mut args, 1000)?;
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
    args.finish()?;

    let n = common.connections;
    let shared = Rc::new(Shared {
        parse,
        gzip: decode == "gzip",
        min_seq: Cell::new(u64::MAX),
        per_sub: (0..n).map(|_| Default::default()).collect(),
        ..Default::default()
    });
    let request = Rc::new(get_request_with(&path, &headers));
    let gate = Rc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    for id in 0..n {
        let (shared, request, gate) = (shared.clone(), request.clone(), gate.clone());
        tokio::task::spawn_local(async move {
            subscriber(id, common, &shared, &request, &gate, deadline).await
        });
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
        "connected": connected,
        "all_connected": connected == n,
        "connect_failed": shared.failed.get(),
        "connect_s": round(connect_s, 3),
        "connect_time_per_subscriber": shared.connect_time.borrow().summary_ms(),
        "lost": shared.lost.get(),
        "duration_s": round(elapsed, 3),
        "bytes_per_s": round(shared.bytes.get() as f64 / elapsed, 0),
    });
    if parse {
        result
            .as_object_mut()
            .expect("object")
            .extend(event_stats(&shared, connected, elapsed));
    }
    Ok(result)
}

fn event_stats(s: &Shared, connected: usize, elapsed: f64) -> serde_json::Map<String, Value> {
    let events = s.events.get();
    let publishes = if events == 0 {
        0
    } else {
        s.max_seq.get() - s.min_seq.get() + 1
    };
    let expected = publishes * connected as u64;
    let live: Vec<_> = s.per_sub.iter().filter(|(e, _)| e.get() > 0).collect();
    let json = json!({
        "events": events,
        "events_per_s": round(events as f64 / elapsed, 1),
        "publishes_seen": publishes,
        "publishes_per_s": round(publishes as f64 / elapsed, 2),
        "delivery_ratio": if expected == 0 { 0.0 } else { round(events as f64 / expected as f64, 4) },
        "gaps": s.gaps.get(),
        "subscribers_with_gaps": s.per_sub.iter().filter(|(_, g)| g.get() > 0).count(),
        "subscribers_without_events": connected.saturating_sub(live.len()),
        "events_per_subscriber_min": live.iter().map(|(e, _)| e.get()).min().unwrap_or(0),
        "events_per_subscriber_max": live.iter().map(|(e, _)| e.get()).max().unwrap_or(0),
        "out_of_order": s.out_of_order.get(),
        "unparsable": s.unparsable.get(),
        "clock_skew": s.clock_skew.get(),
        "latency": s.latency.borrow().summary_ms(),
    });
    match json {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

async fn subscriber(
    id: usize,
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
    let mut conn = match HttpConn::connect_until(common.addr, 8192, deadline).await {
        Ok(c) => c,
        Err(_) => return bump(&s.failed, 1),
    };
    if conn.send(request).await.is_err() {
        return bump(&s.failed, 1);
    }
    let mut permit = Some(permit);
    let mut parser = SseParser::default();
    let mut inflate = s.gzip.then(Gunzip::default);
    let mut plain = Vec::new();
    let mut last_seq: Option<u64> = None;
    let mut streaming = false;
    // Returns only if the stream ends or breaks: a loss, since the client exits mid-stream.
    let _ = conn
        .read_response(|part, now| match part {
            Part::Head(status) => {
                drop(permit.take());
                if status != 200 {
                    return bump(&s.failed, 1);
                }
                streaming = true;
                bump(&s.connected, 1);
                let t = Instant::now();
                s.last_connected_at.set(Some(t));
                s.connect_time
                    .borrow_mut()
                    .record((t - began).as_nanos() as u64);
            }
            Part::Body(b) => {
                if s.phase.get() == Phase::Measure {
                    bump(&s.bytes, b.len() as u64);
                }
                let b = match inflate.as_mut() {
                    Some(g) => {
                        if g.feed(b, &mut plain).is_err() {
                            bump(&s.unparsable, 1);
                        }
                        &plain[..]
                    }
                    None => b,
                };
                if s.parse {
                    parser.feed(b, &mut |data| on_event(id, s, &mut last_seq, data, now));
                }
            }
            Part::End => {}
        })
        .await;
    if permit.is_some() {
        bump(&s.failed, 1); // never got a head
    } else if streaming {
        bump(&s.lost, 1);
    }
}

fn on_event(id: usize, s: &Shared, last_seq: &mut Option<u64>, data: &[u8], now: u64) {
    let measure = s.phase.get() == Phase::Measure;
    let (Some(seq), Some(t)) = (json_u64(data, "seq"), json_u64(data, "t")) else {
        if measure {
            bump(&s.unparsable, 1);
        }
        return;
    };
    let prev = last_seq.replace(seq);
    if !measure {
        return;
    }
    let (events, gaps) = &s.per_sub[id];
    match prev {
        Some(p) if seq > p + 1 => {
            bump(&s.gaps, seq - p - 1);
            bump(gaps, 1);
        }
        Some(p) if seq <= p => bump(&s.out_of_order, 1),
        _ => {}
    }
    bump(events, 1);
    bump(&s.events, 1);
    s.min_seq.set(s.min_seq.get().min(seq));
    s.max_seq.set(s.max_seq.get().max(seq));
    if t > now {
        bump(&s.clock_skew, 1);
    }
    s.latency.borrow_mut().record(now.saturating_sub(t));
}

/// A gzip stream inflated as it arrives (one member, a header without optional fields, as
/// the servers here send).
#[derive(Default)]
struct Gunzip {
    header_left: Option<usize>,
    inflate: Option<flate2::Decompress>,
}

impl Gunzip {
    /// Inflates `input` into `out` (cleared first).
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
        out.clear();
        let left = self.header_left.get_or_insert(10);
        let skip = (*left).min(input.len());
        *left -= skip;
        input = &input[skip..];
        let inflate = self
            .inflate
            .get_or_insert_with(|| flate2::Decompress::new(false));
        // Until all is read and the output did not fill what it was given.
        loop {
            out.reserve(input.len() * 8 + 1024);
            let before = inflate.total_in();
            match inflate.decompress_vec(input, out, flate2::FlushDecompress::Sync) {
                Ok(flate2::Status::StreamEnd) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(()),
            }
            input = &input[(inflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}
