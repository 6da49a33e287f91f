//! The load client's scenarios and what they share: option parsing and the measurement
//! window. Everything runs on one thread (the runner pins the client to one core), so
//! tasks share state through `Rc`/`Cell` instead of atomics.

pub mod broadcast;
pub mod chunked;
pub mod churn;
pub mod conn;
pub mod count;
pub mod decode;
pub mod hello;
pub mod soak;
pub mod ws_echo;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::tls::{Alpn, TlsClient};

/// `--key value` options, each of which must be read exactly once by the scenario.
#[derive(Debug, Default)]
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    /// Parses `--key value` pairs.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = args.into_iter();
        while let Some(key) = it.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {key:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Self { map })
    }

    /// Takes option `key`, or `default` if absent.
    pub fn take<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: cannot parse {v:?}")),
        }
    }

    /// Fails on options no scenario asked for (a typo would otherwise silently run defaults).
    pub fn finish(self) -> Result<(), String> {
        match self.map.keys().next() {
            Some(k) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

/// The options every scenario has.
#[derive(Debug, Clone, Copy)]
pub struct Common {
    /// Server address (the first of `addrs`).
    pub addr: SocketAddr,
    /// Every server address (`--addr a,b`: the same server in several processes); the
    /// scenarios that take more than one spread their connections over them in turn.
    pub addrs: &'static [SocketAddr],
    /// Concurrent connections (subscribers for the SSE scenarios).
    pub connections: usize,
    /// Unmeasured time before the window.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// TLS over every connection (`--tls http1|h2`), made once for the whole run.
    pub tls: Option<&'static TlsClient>,
}

impl Common {
    /// Reads `--addr --connections --warmup --duration --tls`, one address.
    pub fn take(args: &mut Args, connections: usize) -> Result<Self, String> {
        let common = Self::take_many(args, connections)?;
        match common.addrs.len() {
            1 => Ok(common),
            _ => Err("one --addr only (several are for broadcast and idle)".into()),
        }
    }

    /// As [`take`](Self::take), with `--addr a,b,...` (comma-separated) allowed.
    pub fn take_many(args: &mut Args, connections: usize) -> Result<Self, String> {
        let addrs: String = args.take("addr", "127.0.0.1:3000".to_owned())?;
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("--addr: cannot parse {a:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let tls: String = args.take("tls", String::new())?;
        let tls = match tls.as_str() {
            "" => None,
            s => Some(&*Box::leak(Box::new(TlsClient::new(Alpn::parse(s)?)?))),
        };
        Ok(Self {
            addr: addrs[0],
            addrs: Box::leak(addrs.into_boxed_slice()),
            connections: args.take("connections", connections)?.max(1),
            warmup: secs(args.take("warmup", 1.0)?),
            duration: secs(args.take("duration", 10.0)?),
            tls,
        })
    }

    /// Fails for `--tls h2` in a scenario that speaks HTTP/1.1 only.
    pub fn http1_only(&self, scenario: &str) -> Result<(), String> {
        match self.tls {
            Some(t) if t.alpn == Alpn::H2 => Err(format!(
                "{scenario}: --tls h2 is for broadcast and idle only"
            )),
            _ => Ok(()),
        }
    }
}

/// Where the run is; tasks count only what happens in `Measure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Connecting or warming up: nothing is counted.
    #[default]
    Warmup,
    /// The measured window.
    Measure,
    /// Window over: tasks stop.
    Done,
}

/// Prints a progress marker on stderr. The runner samples the server's CPU and RSS when it
/// sees `phase measure-start` / `phase measure-end`, so its numbers cover the same window.
pub fn marker(name: &str) {
    eprintln!("phase {name}");
}

/// Runs the warmup and the measured window, flipping `phase`; returns the window's length.
pub async fn measure_window(phase: &Cell<Phase>, common: &Common) -> Duration {
    phase.set(Phase::Warmup);
    tokio::time::sleep(common.warmup).await;
    marker("measure-start");
    let start = Instant::now();
    phase.set(Phase::Measure);
    tokio::time::sleep(common.duration).await;
    phase.set(Phase::Done);
    let elapsed = start.elapsed();
    marker("measure-end");
    elapsed
}

/// Rounds for JSON output.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Counters every request loop keeps.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Responses that were wrong (status, body, event sequence) or connects that failed.
    pub errors: Cell<u64>,
    /// Connections lost mid-run and opened again.
    pub reconnects: Cell<u64>,
}

impl LoopStats {
    pub(crate) fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

/// What a scenario does with each response of a [`repeat_requests`] loop.
pub trait Exchange {
    /// Called before each request is sent.
    fn begin(&mut self);
    /// Called for each part of the response, with the read's CLOCK_MONOTONIC time.
    fn part(&mut self, part: crate::http::Part<'_>, now: u64);
    /// Called when the response is complete; `measured` says it ended inside the window and
    /// `sent` is when the request went out. Returns false if the response was wrong.
    fn end(&mut self, measured: bool, sent: u64) -> bool;
}

/// Keeps one connection sending `request` and reading the response, one at a time, until
/// `phase` is Done or `max_requests` responses were read; reconnects if the server closes.
pub async fn repeat_requests(
    common: Common,
    phase: &Cell<Phase>,
    stats: &LoopStats,
    request: &[u8],
    buf_size: usize,
    max_requests: u64,
    ex: &mut impl Exchange,
) {
    let mut conn: Option<conn::HttpConn> = None;
    let mut done = 0;
    while phase.get() != Phase::Done && done < max_requests {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match conn::HttpConn::connect(common.addr, common.tls, buf_size).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    LoopStats::bump(&stats.errors);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        ex.begin();
        let sent = crate::sys::monotonic_ns();
        let outcome = match c.send(request).await {
            Ok(()) => c.read_response(|part, t| ex.part(part, t.read)).await,
            Err(e) => Err(e),
        };
        if !matches!(outcome, Ok(true)) {
            conn = None;
            LoopStats::bump(&stats.reconnects);
            continue;
        }
        done += 1;
        if !ex.end(phase.get() == Phase::Measure, sent) {
            LoopStats::bump(&stats.errors);
        }
    }
}
