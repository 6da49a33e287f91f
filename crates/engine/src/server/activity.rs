//! When a connection hyper or the HTTP/2 server serves has nothing to do: no request in
//! flight and no response body open. Past the idle timeout such a connection is shut down
//! gracefully, on HTTP/2 (h2 has no idle timeout: a client that sent only the preface
//! would hold its socket for ever) as on HTTP/1.1.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::stream::Body;

/// One per connection served by hyper.
pub(crate) struct Activity {
    /// Requests whose response body is still open.
    open: AtomicUsize,
    /// When `open` last fell to zero (or the connection started).
    since: Mutex<Instant>,
    /// Woken when `open` falls to zero.
    quiet: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
            quiet: Notify::new(),
        })
    }

    /// Counts a request in until the returned guard (kept by its response body) drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection has had nothing in flight for `timeout`, counted from
    /// `from` at the earliest.
    pub(crate) async fn idle_for(&self, timeout: Duration, from: Instant) {
        loop {
            let quiet = self.quiet.notified();
            let mut quiet = std::pin::pin!(quiet);
            quiet.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
                tokio::time::sleep_until(since.max(from) + timeout).await;
                let now_since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
                if self.open.load(Ordering::Acquire) == 0 && now_since == since {
                    return;
                }
            } else {
                quiet.await;
            }
        }
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        // `since` is set before `open` falls, so a watcher that sees zero reads a fresh one.
        *a.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if a.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.quiet.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
pub(crate) struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl TrackedBody {
    pub(crate) fn new(body: Body, busy: Busy) -> Self {
        TrackedBody { body, _busy: busy }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_once_nothing_is_in_flight_for_the_whole_timeout() {
        let a = Activity::new();
        let t = Duration::from_secs(10);
        let busy = a.begin();
        let idle =
            tokio::time::timeout(Duration::from_secs(60), a.idle_for(t, Instant::now())).await;
        assert!(idle.is_err(), "idle while a request is in flight");
        drop(busy);
        let start = Instant::now();
        let again = a.clone();
        let watcher = tokio::spawn(async move { again.idle_for(t, start).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A request that comes and goes restarts the clock.
        drop(a.begin());
        watcher.await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
    }
}
