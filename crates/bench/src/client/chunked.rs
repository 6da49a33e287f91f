//! `chunked`: C connections each GET `/chunked?bytes=B&size=S` `requests` times; a fixed
//! amount of work, timed from the first request to the last byte, with every body's length
//! checked against B.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use serde_json::{json, Value};

use super::conn::get_request;
use super::{marker, repeat_requests, round, Args, Common, Exchange, LoopStats, Phase};
use crate::http::Part;

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    stats: LoopStats,
    bytes: Cell<u64>,
    responses: Cell<u64>,
}

struct Chunked<'a> {
    shared: &'a Shared,
    want: u64,
    status: u16,
    got: u64,
}

impl Exchange for Chunked<'_> {
    fn begin(&mut self) {
        (self.status, self.got) = (0, 0);
    }

    fn part(&mut self, part: Part<'_>, _now: u64) {
        match part {
            Part::Head(s) => self.status = s,
            Part::Body(b) => self.got += b.len() as u64,
            Part::End => {}
        }
    }

    fn end(&mut self, _measured: bool, _sent: u64) -> bool {
        let s = self.shared;
        s.bytes.set(s.bytes.get() + self.got);
        let ok = self.status == 200 && self.got == self.want;
        if ok {
            s.responses.set(s.responses.get() + 1);
        }
        ok
    }
}

/// Runs the scenario and returns its JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let common = Common::take(&mut args, 4)?;
    common.http1_only("chunked")?;
    let bytes: u64 = args.take("bytes", 256 << 20)?;
    let size: u64 = args.take("size", 64 << 10)?;
    let requests: u64 = args.take("requests", 1)?;
    let path: String = args.take("path", "/chunked".to_owned())?;
    args.finish()?;

    let shared = Rc::new(Shared::default());
    shared.phase.set(Phase::Measure);
    let request = Rc::new(get_request(&format!("{path}?bytes={bytes}&size={size}")));
    marker("measure-start");
    let start = Instant::now();
    let tasks: Vec<_> = (0..common.connections)
        .map(|_| {
            let (shared, request) = (shared.clone(), request.clone());
            tokio::task::spawn_local(async move {
                let mut ex = Chunked {
                    shared: &shared,
                    want: bytes,
                    status: 0,
                    got: 0,
                };
                repeat_requests(
                    common,
                    &shared.phase,
                    &shared.stats,
                    &request,
                    256 * 1024,
                    requests,
                    &mut ex,
                )
                .await;
            })
        })
        .collect();
    // Bounded like every other scenario: `--duration` caps a server that stalls.
    let all = futures_join(tasks);
    let finished = tokio::time::timeout(common.duration, all).await.is_ok();
    shared.phase.set(Phase::Done);
    let elapsed = start.elapsed().as_secs_f64();
    marker("measure-end");
    let total = shared.bytes.get();
    Ok(json!({
        "connections": common.connections,
        "bytes_per_request": bytes,
        "write_size": size,
        "requests_per_connection": requests,
        "finished": finished,
        "duration_s": round(elapsed, 3),
        "bytes": total,
        "bytes_per_s": round(total as f64 / elapsed, 0),
        "gib_per_s": round(total as f64 / elapsed / f64::from(1u32 << 30), 3),
        "responses_ok": shared.responses.get(),
        "errors": shared.stats.errors.get(),
        "reconnects": shared.stats.reconnects.get(),
    }))
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
