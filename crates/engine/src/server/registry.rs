//! The streams a server has open, so that shutdown can end them: SSE streams cleanly (the
//! browser reconnects and resumes), byte streams as cut short (see
//! [`StreamSender::end_truncated`]), since their client cannot tell a cut from a
//! complete response otherwise; and its WebSockets, which close with 1001 when shutdown
//! begins.
//!
//! WebSockets with an idle timeout are also on that timeout's idle clock ([`IdleClock`]):
//! one task per timeout ticks every quarter of it and closes (1001) the sockets that read
//! nothing for [`IDLE_TICKS`] ticks in a row, so a socket has no timer of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::stream::{StreamSender, WeakSender};
use crate::ws::{WeakWs, WsSender};

/// Weak handles, so that tracking costs a stream one pointer and no close callback; the
/// handles of streams that are over are dropped when a list would grow.
#[derive(Default)]
pub(crate) struct StreamRegistry {
    open: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    sse: Vec<WeakSender>,
    bytes: Vec<WeakSender>,
    ws: Vec<WeakWs>,
    /// The idle clocks, by timeout.
    idle: HashMap<Duration, Arc<IdleClock>>,
}

/// Ticks of an idle clock with nothing read after which a socket is closed: it closes
/// between its timeout and a quarter more after its last read.
const IDLE_TICKS: u8 = 4;

/// The sockets of one idle timeout, and whether its task runs (it ends when they have all
/// closed, and starts again with the next socket).
struct IdleClock {
    tick: Duration,
    sockets: Mutex<Vec<WeakWs>>,
    running: AtomicBool,
}

impl IdleClock {
    fn sockets(&self) -> std::sync::MutexGuard<'_, Vec<WeakWs>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.tick).await;
            let empty = {
                let mut sockets = self.sockets();
                sockets.retain(|w| match w.upgrade() {
                    Some(socket) => {
                        WsSender { socket }.idle_tick(IDLE_TICKS);
                        true
                    }
                    None => false,
                });
                if sockets.is_empty() {
                    *sockets = Vec::new();
                    // Under the lock: a socket tracked from now on starts the task again.
                    self.running.store(false, Ordering::Release);
                    true
                } else {
                    false
                }
            };
            if empty {
                return;
            }
        }
    }
}

impl std::fmt::Debug for StreamRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRegistry").finish_non_exhaustive()
    }
}

fn live(w: &WeakSender) -> bool {
    w.upgrade().is_some_and(|s| !s.is_disconnected())
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks `stream` until its body is dropped; `sse` says how shutdown ends it.
    pub(crate) fn track(&self, stream: &StreamSender, sse: bool) {
        let mut lists = self.lock();
        let open = if sse {
            &mut lists.sse
        } else {
            &mut lists.bytes
        };
        if open.len() == open.capacity() {
            // Amortised: at most one sweep per doubling of the live streams.
            open.retain(live);
        }
        open.push(stream.downgrade());
    }

    /// Tracks a WebSocket until it closes; with `idle_timeout`, on that timeout's idle
    /// clock too (started if it does not run; this needs a tokio runtime).
    pub(crate) fn track_ws(&self, socket: &WsSender, idle_timeout: Option<Duration>) {
        let mut lists = self.lock();
        if lists.ws.len() == lists.ws.capacity() {
            lists.ws.retain(|w| Weak::strong_count(w) > 0);
        }
        lists.ws.push(socket.downgrade());
        let Some(timeout) = idle_timeout else {
            return;
        };
        let clock = lists
            .idle
            .entry(timeout)
            .or_insert_with(|| {
                Arc::new(IdleClock {
                    tick: (timeout / u32::from(IDLE_TICKS)).max(Duration::from_millis(1)),
                    sockets: Mutex::new(Vec::new()),
                    running: AtomicBool::new(false),
                })
            })
            .clone();
        drop(lists);
        let mut sockets = clock.sockets();
        if sockets.len() == sockets.capacity() {
            // As above: the closed sockets' memory is not kept for a whole tick.
            sockets.retain(|w| Weak::strong_count(w) > 0);
        }
        sockets.push(socket.downgrade());
        if !clock.running.swap(true, Ordering::AcqRel) {
            drop(sockets);
            tokio::spawn(clock.run());
        }
    }

    /// Tells every open WebSocket that the server shuts down (it closes with 1001).
    pub(crate) fn shut_down_ws(&self) {
        let ws = std::mem::take(&mut self.lock().ws);
        for socket in ws.iter().filter_map(Weak::upgrade) {
            WsSender { socket }.shut_down();
        }
    }

    /// Ends every open stream after what it has queued: SSE streams cleanly, byte streams
    /// as truncated.
    pub(crate) fn end_all(&self) {
        let (sse, bytes): (Vec<StreamSender>, Vec<StreamSender>) = {
            let lists = self.lock();
            let up = |l: &Vec<WeakSender>| l.iter().filter_map(WeakSender::upgrade).collect();
            (up(&lists.sse), up(&lists.bytes))
        };
        for s in sse {
            s.end();
        }
        for s in bytes {
            s.end_truncated("the server shut down before the response was complete");
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let lists = self.lock();
        lists
            .sse
            .iter()
            .chain(&lists.bytes)
            .filter(|w| live(w))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{QueueLimits, StreamingResponse};
    use crate::IntoResponse;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn tracks_until_the_body_is_dropped_and_ends_sse_cleanly_and_bytes_truncated() {
        let reg = StreamRegistry::default();
        let (a, tx_a) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let (b, tx_b) = StreamingResponse::channel("text/event-stream", QueueLimits::default());
        let (c, tx_c) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let body_a = a.into_response().into_body();
        let (body_b, body_c) = (b.into_response().into_body(), c.into_response().into_body());
        reg.track(&tx_a, false);
        reg.track(&tx_b, true);
        reg.track(&tx_c, false);
        assert_eq!(reg.len(), 3);
        drop(body_a);
        assert_eq!(reg.len(), 2);
        tx_b.write(bytes::Bytes::from_static(b"data: x\n\n"))
            .unwrap();
        tx_c.write(bytes::Bytes::from_static(b"queued")).unwrap();
        reg.end_all();
        assert!(
            tx_b.is_closed() && !tx_b.is_disconnected(),
            "ended, not cut"
        );
        assert_eq!(
            &body_b.collect().await.unwrap().to_bytes()[..],
            b"data: x\n\n"
        );
        // What was queued is delivered, then the body fails.
        let mut body_c = body_c;
        let first = body_c.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"queued");
        assert!(
            body_c.frame().await.unwrap().is_err(),
            "cut after what it queued"
        );
        drop(body_c);
        assert_eq!(reg.len(), 0);
    }

    /// The idle clock of `timeout`: (sockets listed, whether its task runs).
    fn clock(reg: &StreamRegistry, timeout: Duration) -> (usize, bool) {
        let clock = reg.lock().idle.get(&timeout).cloned().unwrap();
        let listed = clock.sockets().len();
        (listed, clock.running.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn an_idle_clock_times_out_sockets_that_read_nothing_and_stops_when_they_are_gone() {
        use crate::ws::socket::Take;
        let reg = StreamRegistry::default();
        let timeout = Duration::from_millis(80);
        let quiet = WsSender::new(QueueLimits::default(), None, false);
        let talking = WsSender::new(QueueLimits::default(), None, false);
        let gone = WsSender::new(QueueLimits::default(), None, false);
        for s in [&quiet, &talking, &gone] {
            reg.track_ws(s, Some(timeout));
        }
        // No clock for sockets without a timeout.
        reg.track_ws(&WsSender::new(QueueLimits::default(), None, false), None);
        assert_eq!(reg.lock().idle.len(), 1);
        assert_eq!(clock(&reg, timeout), (3, true));
        drop(gone);
        let stopped = |s: &WsSender| {
            let waker = futures_util::task::noop_waker();
            s.poll_stop(&mut std::task::Context::from_waker(&waker))
        };
        // One read every 20 ms keeps `talking` open while `quiet` times out (after 100 ms:
        // the first tick finds the read each socket starts with).
        let start = tokio::time::Instant::now();
        while stopped(&quiet).is_pending() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "`quiet` timed out"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            talking.heard();
        }
        assert!(matches!(
            stopped(&quiet),
            std::task::Poll::Ready(Take::Idle)
        ));
        assert!(start.elapsed() >= timeout, "not before its timeout");
        assert!(stopped(&talking).is_pending(), "read from: still open");
        // A tick dropped the socket that is gone.
        assert_eq!(clock(&reg, timeout), (2, true));
        drop((quiet, talking));
        while clock(&reg, timeout) != (0, false) {
            assert!(
                start.elapsed() < Duration::from_secs(4),
                "the clock's task ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next socket starts it again.
        let next = WsSender::new(QueueLimits::default(), None, false);
        reg.track_ws(&next, Some(timeout));
        assert_eq!(clock(&reg, timeout), (1, true));
    }
}
