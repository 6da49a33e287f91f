//! `hello`: requests/s for `GET /hello` over N keep-alive connections, one request in
//! flight per connection (no pipelining), with per-request latency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::{json, Value};

use super::conn::get_request_with;
use super::{measure_window, repeat_requests, round, Args, Common, Exchange, LoopStats, Phase};
use crate::http::Part;
use crate::stats::Histogram;

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    stats: LoopStats,
    requests: Cell<u64>,
    latency: RefCell<Histogram>,
}

struct Hello<'a> {
    shared: &'a Shared,
    expect: &'a [u8],
    status: u16,
    body: Vec<u8>,
    done_at: u64,
}

impl Exchange for Hello<'_> {
    fn begin(&mut self) {
        self.body.clear();
        self.status = 0;
    }

    fn part(&mut self, part: Part<'_>, now: u64) {
        match part {
            Part::Head(s) => self.status = s,
            Part::Body(b) => self.body.extend_from_slice(b),
            Part::End => self.done_at = now,
        }
    }

    fn end(&mut self, measured: bool, sent: u64) -> bool {
        let ok = self.status == 200 && self.body == self.expect;
        if measured && ok {
            self.shared.requests.set(self.shared.requests.get() + 1);
            self.shared
                .latency
                .borrow_mut()
                .record(self.done_at.saturating_sub(sent));
        }
        ok
    }
}

/// Runs the scenario and returns its JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let common = Common::take(&mut args, 64)?;
    common.http1_only("hello")?;
    let path: String = args.take("path", "/hello".to_owned())?;
    let expect: String = args.take("expect", "hello".to_owned())?;
    let headers: String = args.take("header", String::new())?;
    args.finish()?;

    let shared = Rc::new(Shared::default());
    let request = Rc::new(get_request_with(&path, &headers));
    let expect = Rc::new(expect.into_bytes());
    for _ in 0..common.connections {
        let (shared, request, expect) = (shared.clone(), request.clone(), expect.clone());
        tokio::task::spawn_local(async move {
            let mut ex = Hello {
                shared: &shared,
                expect: &expect,
                status: 0,
                body: Vec::new(),
                done_at: 0,
            };
            repeat_requests(
                common,
                &shared.phase,
                &shared.stats,
                &request,
                4096,
                u64::MAX,
                &mut ex,
            )
            .await;
        });
    }
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    let requests = shared.requests.get();
    Ok(json!({
        "connections": common.connections,
        "duration_s": round(elapsed, 3),
        "requests": requests,
        "requests_per_s": round(requests as f64 / elapsed, 1),
        "errors": shared.stats.errors.get(),
        "reconnects": shared.stats.reconnects.get(),
        "latency": shared.latency.borrow().summary_ms(),
    }))
}
