//! `soak`: N subscribers to a channel for a long run, with reconnects sprinkled in that
//! resume from `Last-Event-ID`, every event checked against the subscriber's own sequence.
//!
//! The channel's ids are `<epoch>-<n>`, n counting from 1, and each event's data is
//! `{"n":n}`. Per subscriber the client keeps the last n it saw: the next event must be
//! n + 1 (a smaller one is a duplicate or out of order, a larger one a gap, a data that
//! does not name the id's n is corrupt). `--reconnects-per-s` times a second a random
//! connected subscriber drops its connection, waits up to `--reconnect-delay-ms` and
//! reconnects with `Last-Event-ID: <epoch>-<last n>`, so the server replays what it missed
//! from history. After the window the client asks `--stop-path` to stop publishing (its
//! JSON answer names the last n), waits until every subscriber has it (`--settle` at most)
//! and reports: lost = gaps + what a subscriber never got up to the last n.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use super::{marker, measure_window, round, Args, Common, Phase};
use crate::http::{Part, ResponseDecoder};
use crate::sse::{json_u64, SseEvent, SseParser};

/// One subscriber's view of the sequence.
#[derive(Default)]
struct Sub {
    /// Set by the reconnect ticker: drop the connection and resume.
    kick: Notify,
    connected: Cell<bool>,
    first: Cell<Option<u64>>,
    last: Cell<Option<u64>>,
    /// Events that extended the sequence by one.
    fresh: Cell<u64>,
    gaps: Cell<u64>,
    duplicated: Cell<u64>,
    out_of_order: Cell<u64>,
    corrupt: Cell<u64>,
    missed: Cell<u64>,
    /// The next event may jump: it follows a `missed` notice.
    after_missed: Cell<bool>,
    reconnects: Cell<u64>,
    /// Connections the server ended or broke.
    server_closed: Cell<u64>,
}

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    subs: Vec<Rc<Sub>>,
    /// The channel's epoch, from the first id seen; ids of another epoch are corrupt.
    epoch: RefCell<Option<Vec<u8>>>,
    connect_failed: Cell<u64>,
    /// Responses that were not a 200 event stream.
    bad_status: Cell<u64>,
    /// Every subscriber connected once.
    initially_connected: Cell<usize>,
    last_connected_at: Cell<Option<Instant>>,
    stopping: Cell<bool>,
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get() + by);
}

/// xorshift64*, for which subscriber reconnects and how long it waits.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Runs `soak` and returns the JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let common = Common::take(&mut args, 1000)?;
    if common.tls.is_some() {
        return Err("soak: --tls is not supported".into());
    }
    let path: String = args.take("path", "/soak/channel".to_owned())?;
    let stop_path: String = args.take("stop-path", "/soak/stop".to_owned())?;
    let reconnects_per_s: f64 = args.take("reconnects-per-s", 10.0)?;
    let reconnect_delay = args.take("reconnect-delay-ms", 1000u64)?;
    let settle = Duration::from_secs_f64(args.take("settle", 30.0)?);
    let connect_timeout = Duration::from_secs_f64(args.take("connect-timeout", 60.0)?);
    let concurrency: usize = args.take("connect-concurrency", 256)?;
    let seed: u64 = args.take("seed", 1)?;
    args.finish()?;

    let n = common.connections;
    let shared = Rc::new(Shared {
        subs: (0..n).map(|_| Rc::default()).collect(),
        ..Default::default()
    });
    let gate = Rc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    for i in 0..n {
        let (shared, gate, path) = (shared.clone(), gate.clone(), path.clone());
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1) | 1);
        tokio::task::spawn_local(async move {
            subscriber(
                i,
                &shared,
                common,
                &path,
                &gate,
                deadline,
                reconnect_delay,
                &mut rng,
            )
            .await
        });
    }
    let settled = |s: &Shared| {
        let failed = (s.connect_failed.get() + s.bad_status.get()) as usize;
        s.initially_connected.get() + failed >= n
    };
    while !settled(&shared) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connected = shared.initially_connected.get();
    let connect_s = shared
        .last_connected_at
        .get()
        .map_or(0.0, |t| (t - start).as_secs_f64());
    marker("connected");

    // The reconnect ticker: every 100 ms its share of the rate, among connected ones.
    let ticker = {
        let shared = shared.clone();
        let mut rng = Rng(seed ^ 0xA5A5_A5A5 | 1);
        tokio::task::spawn_local(async move {
            let mut owed = 0.0;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if shared.phase.get() == Phase::Done {
                    return;
                }
                owed += reconnects_per_s / 10.0;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let sub = &shared.subs[rng.below(n as u64) as usize];
                    if sub.connected.get() {
                        sub.kick.notify_one();
                    }
                }
            }
        })
    };
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    ticker.abort();

    shared.stopping.set(true);
    let final_n = stop(common.addr, &stop_path).await?;
    let settle_start = Instant::now();
    let reached = |s: &Sub| s.last.get().is_some_and(|l| l >= final_n);
    while settle_start.elapsed() < settle && !shared.subs.iter().all(|s| reached(s)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle_s = settle_start.elapsed().as_secs_f64();
    marker("settled");
    Ok(report(
        &shared, n, connected, connect_s, elapsed, final_n, settle_s,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    id: usize,
    s: &Shared,
    common: Common,
    path: &str,
    gate: &Semaphore,
    deadline: tokio::time::Instant,
    reconnect_delay: u64,
    rng: &mut Rng,
) {
    let sub = s.subs[id].clone();
    let mut first_time = true;
    loop {
        // The first connects go through the gate (a polite ramp); reconnects do not.
        let mut permit = if first_time {
            match gate.acquire().await {
                Ok(p) => Some(p),
                Err(_) => return,
            }
        } else {
            None
        };
        let last_id = match (&*s.epoch.borrow(), sub.last.get()) {
            (Some(epoch), Some(last)) => Some(format!("{}-{last}", String::from_utf8_lossy(epoch))),
            _ => None,
        };
        let mut stream = loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(common.addr));
            match attempt.await {
                Ok(Ok(st)) => break st,
                _ if first_time && tokio::time::Instant::now() >= deadline => {
                    return bump(&s.connect_failed, 1);
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let _ = stream.set_nodelay(true);
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n");
        if let Some(id) = &last_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        let (kicked, head_ok) = if stream.write_all(req.as_bytes()).await.is_ok() {
            read_stream(s, &sub, &mut stream, &mut first_time, &mut permit).await
        } else {
            (false, None)
        };
        drop(permit);
        sub.connected.set(false);
        drop(stream);
        if head_ok == Some(false) {
            return bump(&s.bad_status, 1);
        }
        if kicked {
            bump(&sub.reconnects, 1);
            tokio::time::sleep(Duration::from_millis(rng.below(reconnect_delay + 1))).await;
        } else {
            if !s.stopping.get() {
                bump(&sub.server_closed, 1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads one connection's event stream until the subscriber is kicked (true) or the
/// connection ends (false); also says whether its head was a 200, if one came.
async fn read_stream(
    s: &Shared,
    sub: &Sub,
    stream: &mut TcpStream,
    first_time: &mut bool,
    permit: &mut Option<tokio::sync::SemaphorePermit<'_>>,
) -> (bool, Option<bool>) {
    let mut decoder = ResponseDecoder::default();
    let mut parser = SseParser::default();
    let mut buf = vec![0u8; 8192];
    let (mut start, mut end) = (0, 0);
    let mut head_ok = None;
    loop {
        let read = tokio::select! {
            r = stream.read(&mut buf[end..]) => r,
            _ = sub.kick.notified() => return (true, head_ok),
        };
        match read {
            Ok(0) | Err(_) => return (false, head_ok),
            Ok(k) => end += k,
        }
        let mut ended = false;
        let fed = decoder.feed(&buf[start..end], &mut |part| match part {
            Part::Head(status) => head_ok = Some(status == 200),
            Part::Body(b) => parser.feed_events(b, &mut |e| on_event(s, sub, e)),
            Part::End => ended = true,
        });
        match head_ok {
            Some(false) => return (false, head_ok),
            Some(true) if !sub.connected.get() => {
                sub.connected.set(true);
                *permit = None;
                if std::mem::take(first_time) {
                    s.initially_connected.set(s.initially_connected.get() + 1);
                    s.last_connected_at.set(Some(Instant::now()));
                }
            }
            _ => {}
        }
        match fed {
            Ok((used, _)) if !ended => start += used,
            // The server ended the stream (or broke the framing): reconnect.
            _ => return (false, head_ok),
        }
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
    }
}

fn on_event(s: &Shared, sub: &Sub, e: SseEvent<'_>) {
    if e.event == b"missed" {
        bump(&sub.missed, 1);
        sub.after_missed.set(true);
        return;
    }
    let Some((epoch, n)) = split_id(e.id) else {
        return bump(&sub.corrupt, 1);
    };
    {
        let mut known = s.epoch.borrow_mut();
        match &*known {
            None => *known = Some(epoch.to_vec()),
            Some(k) if k.as_slice() != epoch => return bump(&sub.corrupt, 1),
            Some(_) => {}
        }
    }
    if json_u64(e.data, "n") != Some(n) {
        bump(&sub.corrupt, 1);
    }
    match sub.last.get() {
        None => {
            sub.first.set(Some(n));
            bump(&sub.fresh, 1);
        }
        Some(last) if n == last + 1 => bump(&sub.fresh, 1),
        Some(last) if n == last => return bump(&sub.duplicated, 1),
        Some(last) if n < last => return bump(&sub.out_of_order, 1),
        Some(last) if sub.after_missed.get() => {
            // Told it missed events: history starts further on.
            let _ = last;
            bump(&sub.fresh, 1);
        }
        Some(last) => {
            bump(&sub.gaps, n - last - 1);
            bump(&sub.fresh, 1);
        }
    }
    sub.after_missed.set(false);
    sub.last.set(Some(n));
}

/// `<epoch>-<n>` → (epoch, n).
fn split_id(id: &[u8]) -> Option<(&[u8], u64)> {
    let dash = id.iter().rposition(|&b| b == b'-')?;
    let n = std::str::from_utf8(&id[dash + 1..]).ok()?.parse().ok()?;
    Some((&id[..dash], n))
}

/// Asks the server to stop publishing; returns the last n it published.
async fn stop(addr: std::net::SocketAddr, path: &str) -> Result<u64, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("stop: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("stop: {e}"))?;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .map_err(|_| "stop: no answer".to_string())?
        .map_err(|e| format!("stop: {e}"))?;
    let mut body = Vec::new();
    let mut status = 0;
    ResponseDecoder::default()
        .feed(&all, &mut |p| match p {
            Part::Head(s) => status = s,
            Part::Body(b) => body.extend_from_slice(b),
            Part::End => {}
        })
        .map_err(|e| format!("stop: {e}"))?;
    if status != 200 {
        return Err(format!("stop: status {status}"));
    }
    json_u64(&body, "last")
        .ok_or_else(|| format!("stop: no last in {:?}", String::from_utf8_lossy(&body)))
}

fn report(
    s: &Shared,
    n: usize,
    connected: usize,
    connect_s: f64,
    elapsed: f64,
    final_n: u64,
    settle_s: f64,
) -> Value {
    let sum = |f: &dyn Fn(&Sub) -> u64| s.subs.iter().map(|x| f(x)).sum::<u64>();
    // What each subscriber was owed from its first event to the last published.
    let owed = sum(&|x| x.first.get().map_or(0, |f| final_n.saturating_sub(f) + 1));
    let short = sum(&|x| match (x.first.get(), x.last.get()) {
        (Some(_), Some(l)) => final_n.saturating_sub(l),
        _ => 0,
    });
    let gaps = sum(&|x| x.gaps.get());
    let complete = s
        .subs
        .iter()
        .filter(|x| x.last.get().is_some_and(|l| l >= final_n))
        .count();
    json!({
        "subscribers": n,
        "connected": connected,
        "all_connected": connected == n,
        "connect_failed": s.connect_failed.get(),
        "bad_status": s.bad_status.get(),
        "connect_s": round(connect_s, 3),
        "duration_s": round(elapsed, 3),
        "final_n": final_n,
        "events": sum(&|x| x.fresh.get()),
        "events_owed": owed,
        "lost": gaps + short,
        "gaps": gaps,
        "short_at_end": short,
        "duplicated": sum(&|x| x.duplicated.get()),
        "out_of_order": sum(&|x| x.out_of_order.get()),
        "corrupt": sum(&|x| x.corrupt.get()),
        "missed_notices": sum(&|x| x.missed.get()),
        "reconnects": sum(&|x| x.reconnects.get()),
        "server_closed": sum(&|x| x.server_closed.get()),
        "subscribers_complete": complete,
        "settle_s": round(settle_s, 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &Shared, sub: &Sub, events: &[(&str, &str, &str)]) {
        for (event, id, data) in events {
            on_event(
                s,
                sub,
                SseEvent {
                    event: event.as_bytes(),
                    id: id.as_bytes(),
                    data: data.as_bytes(),
                },
            );
        }
    }

    #[test]
    fn every_kind_of_fault_in_a_sequence_is_counted() {
        let s = Shared::default();
        let sub = Sub::default();
        let ev = |n: u64| ("", format!("e-{n}"), format!("{{\"n\":{n}}}"));
        let list: Vec<(String, String, String)> = [3, 4, 4, 6, 5, 7]
            .iter()
            .map(|&n| {
                let (e, i, d) = ev(n);
                (e.to_string(), i, d)
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = list
            .iter()
            .map(|(e, i, d)| (e.as_str(), i.as_str(), d.as_str()))
            .collect();
        feed(&s, &sub, &refs);
        assert_eq!(sub.first.get(), Some(3));
        assert_eq!(sub.last.get(), Some(7));
        assert_eq!(sub.fresh.get(), 4, "3, 4, 6, 7");
        assert_eq!(sub.duplicated.get(), 1);
        assert_eq!(sub.gaps.get(), 1, "5 was skipped when 6 came");
        assert_eq!(sub.out_of_order.get(), 1, "5 after 6");
        feed(
            &s,
            &sub,
            &[
                ("", "e-8", "{\"n\":9}"),
                ("", "other-9", "{\"n\":9}"),
                ("missed", "e-9", "{}"),
                ("", "e-20", "{\"n\":20}"),
                ("", "e-21", "{\"n\":21}"),
            ],
        );
        assert_eq!(sub.corrupt.get(), 2, "data naming another n; another epoch");
        assert_eq!(sub.missed.get(), 1);
        assert_eq!(
            sub.gaps.get(),
            1,
            "a jump right after `missed` is not a gap"
        );
        assert_eq!(sub.last.get(), Some(21));
    }
}
