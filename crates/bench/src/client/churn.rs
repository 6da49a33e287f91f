//! `churn`: connect, subscribe, disconnect, over and over.
//!
//! `--concurrency` loops run `--cycles` cycles between them. A cycle connects, sends
//! `GET <path>` (the paths of `--paths` in turn) and then leaves: right after sending
//! (`--early-percent` of the cycles: the client is gone before its handler answers, or
//! while it starts), or once the response head and a first piece of body arrived. The
//! server's counters must all come back to rest afterwards; this only drives the load and
//! counts what the server answered. Progress goes to stderr (`phase churn-<percent>`) so a
//! runner can sample the server as cycles pass.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{marker, round, Args};
use crate::http::{Part, ResponseDecoder};

#[derive(Default)]
struct Shared {
    started: Cell<u64>,
    /// Cycles that got a 200 head and a first piece of body.
    answered: Cell<u64>,
    /// Cycles that left right after sending.
    early: Cell<u64>,
    /// Connects that failed, statuses other than 200, connections closed before a body.
    failed: Cell<u64>,
    done: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Runs `churn` and returns the JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let addr = args.take("addr", std::net::SocketAddr::from(([127, 0, 0, 1], 3000)))?;
    let cycles: u64 = args.take("cycles", 2000)?;
    let concurrency: usize = args.take("concurrency", 64)?;
    let paths: String = args.take("paths", "/churn/sse".to_owned())?;
    let early_percent: u64 = args.take("early-percent", 20)?;
    let timeout = Duration::from_secs_f64(args.take("timeout", 600.0)?);
    args.finish()?;
    let paths: Rc<Vec<Vec<u8>>> = Rc::new(
        paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes())
            .collect(),
    );
    if paths.is_empty() {
        return Err("--paths: no path".into());
    }
    let shared = Rc::new(Shared::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (shared, paths) = (shared.clone(), paths.clone());
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let i = shared.started.get();
                if i >= cycles {
                    return;
                }
                bump(&shared.started);
                let request = &paths[(i % paths.len() as u64) as usize];
                let early = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100 < early_percent;
                match cycle(addr, request, early).await {
                    Ok(true) => bump(&shared.answered),
                    Ok(false) => bump(&shared.early),
                    Err(()) => bump(&shared.failed),
                }
                bump(&shared.done);
                let done = shared.done.get();
                if done % (cycles / 10).max(1) == 0 {
                    marker(&format!("churn-{}", done * 100 / cycles));
                }
            }
        }));
    }
    let all = futures_join(tasks);
    let finished = tokio::time::timeout(timeout, all).await.is_ok();
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "cycles": shared.done.get(),
        "finished": finished,
        "answered": shared.answered.get(),
        "early_closed": shared.early.get(),
        "failed": shared.failed.get(),
        "duration_s": round(elapsed, 3),
        "cycles_per_s": round(shared.done.get() as f64 / elapsed, 1),
    }))
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// One cycle; `Ok(true)` once a head and body arrived, `Ok(false)` for an early leave.
async fn cycle(addr: std::net::SocketAddr, request: &[u8], early: bool) -> Result<bool, ()> {
    let mut stream = TcpStream::connect(addr).await.map_err(|_| ())?;
    let _ = stream.set_nodelay(true);
    stream.write_all(request).await.map_err(|_| ())?;
    if early {
        tokio::task::yield_now().await;
        return Ok(false);
    }
    let mut buf = [0u8; 4096];
    let mut have = 0;
    let mut decoder = ResponseDecoder::default();
    let mut status = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf[have..]))
            .await
            .map_err(|_| ())?
            .map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        have += n;
        let mut body = false;
        let (used, _) = decoder
            .feed(&buf[..have], &mut |p| match p {
                Part::Head(s) => status = s,
                Part::Body(b) => body |= !b.is_empty(),
                Part::End => body = true,
            })
            .map_err(|_| ())?;
        if status != 0 && status != 200 {
            return Err(());
        }
        if body {
            return Ok(true);
        }
        buf.copy_within(used..have, 0);
        have -= used;
        if have == buf.len() {
            return Err(());
        }
    }
}
