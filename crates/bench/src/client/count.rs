//! `count`: C connections each GET `/sse/count?n=K` back to back; counts complete streams/s
//! and events/s, and checks every stream carries exactly K events `{"i":0..K-1}` in order.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{json, Value};

use super::conn::get_request;
use super::{measure_window, repeat_requests, round, Args, Common, Exchange, LoopStats, Phase};
use crate::http::Part;
use crate::sse::{json_u64, SseParser};

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    stats: LoopStats,
    streams: Cell<u64>,
    events: Cell<u64>,
    bytes: Cell<u64>,
}

struct Count<'a> {
    shared: &'a Shared,
    n: u64,
    parser: SseParser,
    status: u16,
    /// The next `i` expected; `None` once the sequence went wrong.
    next: Option<u64>,
    bytes: u64,
}

impl Exchange for Count<'_> {
    fn begin(&mut self) {
        self.parser = SseParser::default();
        (self.status, self.next, self.bytes) = (0, Some(0), 0);
    }

    fn part(&mut self, part: Part<'_>, _now: u64) {
        match part {
            Part::Head(s) => self.status = s,
            Part::Body(b) => {
                self.bytes += b.len() as u64;
                let next = &mut self.next;
                self.parser.feed(b, &mut |data| {
                    *next = next
                        .filter(|&want| json_u64(data, "i") == Some(want))
                        .map(|i| i + 1);
                });
            }
            Part::End => {}
        }
    }

    fn end(&mut self, measured: bool, _sent: u64) -> bool {
        let ok = self.status == 200 && self.next == Some(self.n);
        if measured && ok {
            let s = self.shared;
            s.streams.set(s.streams.get() + 1);
            s.events.set(s.events.get() + self.n);
            s.bytes.set(s.bytes.get() + self.bytes);
        }
        ok
    }
}

/// Runs the scenario and returns its JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let common = Common::take(&mut args, 50)?;
    common.http1_only("count")?;
    let n: u64 = args.take("n", 100)?;
    let path: String = args.take("path", "/sse/count".to_owned())?;
    args.finish()?;

    let shared = Rc::new(Shared::default());
    let request = Rc::new(get_request(&format!("{path}?n={n}")));
    for _ in 0..common.connections {
        let (shared, request) = (shared.clone(), request.clone());
        tokio::task::spawn_local(async move {
            let mut ex = Count {
                shared: &shared,
                n,
                parser: SseParser::default(),
                status: 0,
                next: None,
                bytes: 0,
            };
            repeat_requests(
                common,
                &shared.phase,
                &shared.stats,
                &request,
                16 * 1024,
                u64::MAX,
                &mut ex,
            )
            .await;
        });
    }
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    let (streams, events) = (shared.streams.get(), shared.events.get());
    Ok(json!({
        "connections": common.connections,
        "n": n,
        "duration_s": round(elapsed, 3),
        "streams": streams,
        "streams_per_s": round(streams as f64 / elapsed, 1),
        "events": events,
        "events_per_s": round(events as f64 / elapsed, 1),
        "bytes_per_s": round(shared.bytes.get() as f64 / elapsed, 0),
        "errors": shared.stats.errors.get(),
        "reconnects": shared.stats.reconnects.get(),
    }))
}
