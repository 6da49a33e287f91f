//! The shutdown's two steps as connections see them: it begins (connections finish what
//! they serve and close) and, past the grace period, it is forced (what is still open is
//! dropped).
//!
//! Every connection task waits on it, so waiting must not cost a lock per poll: the step
//! is an atomic read on each poll, and a waiter registers its task's waker with the
//! [`Notify`] once per step.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

// The steps, from 0 (running).
const BEGUN: u8 = 1;
const FORCED: u8 = 2;

/// A server's shutdown, shared by its handle and its connections.
#[derive(Clone, Default)]
pub(crate) struct Shutdown(Arc<Inner>);

#[derive(Default)]
struct Inner {
    step: AtomicU8,
    /// Notified (all waiters) at each step.
    changed: Notify,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("step", &self.step())
            .finish()
    }
}

impl Shutdown {
    fn step(&self) -> u8 {
        self.0.step.load(Ordering::Acquire)
    }

    fn advance(&self, to: u8) {
        if self.0.step.fetch_max(to, Ordering::AcqRel) < to {
            self.0.changed.notify_waiters();
        }
    }

    /// Begins the shutdown: connections finish what they serve and close.
    pub(crate) fn begin(&self) {
        self.advance(BEGUN);
    }

    /// Ends the grace period: connections still open are dropped.
    pub(crate) fn force(&self) {
        self.advance(FORCED);
    }

    /// The shutdown has begun.
    pub(crate) fn is_begun(&self) -> bool {
        self.step() >= BEGUN
    }

    /// Completes once the shutdown has begun.
    pub(crate) fn begun(&self) -> Step<'_> {
        Step::new(self, BEGUN)
    }

    /// Completes once the shutdown is forced. It wakes its task at each step, so a future
    /// polled by the same task can watch the beginning with [`Shutdown::begun_seen`].
    pub(crate) fn forced(&self) -> Step<'_> {
        Step::new(self, FORCED)
    }

    /// Completes once the shutdown has begun, registering nothing: only for a future polled
    /// by a task that also polls a [`Shutdown::forced`] (or [`Shutdown::begun`]) of this
    /// shutdown, which is what wakes it. A connection's head read uses it, as a new
    /// registration per request would take the `Notify`'s lock twice.
    pub(crate) fn begun_seen(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |_| {
            if self.is_begun() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// Completes once the shutdown has reached a step (see [`Shutdown::begun`]). It must
    /// be polled by one task, as `.await` and `tokio::select!` in a task do: it keeps the
    /// waker of its first poll after each step, and does not compare wakers on every poll
    /// (storing one to compare would grow every connection task past its allocation
    /// class).
    pub(crate) struct Step<'a> {
        shutdown: &'a Shutdown,
        target: u8,
        // The step seen when `notified` was registered, or none yet.
        seen: Option<u8>,
        #[pin]
        notified: Notified<'a>,
    }
}

impl<'a> Step<'a> {
    fn new(shutdown: &'a Shutdown, target: u8) -> Self {
        Step {
            shutdown,
            target,
            seen: None,
            notified: shutdown.0.changed.notified(),
        }
    }
}

impl Future for Step<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let mut step = this.shutdown.step();
        loop {
            if step >= *this.target {
                return Poll::Ready(());
            }
            if *this.seen == Some(step) {
                return Poll::Pending;
            }
            // Registered anew: a `Notified` created now sees every later step. The step is
            // read again after registering, so a step taken in between is not missed.
            if this.seen.is_some() {
                this.notified.set(this.shutdown.0.changed.notified());
            }
            let ready = this.notified.as_mut().poll(cx).is_ready();
            let now = this.shutdown.step();
            if !ready && now == step {
                *this.seen = Some(step);
                return Poll::Pending;
            }
            *this.seen = Some(u8::MAX);
            step = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_complete_at_their_step_and_not_before() {
        let s = Shutdown::default();
        let (a, b) = (s.clone(), s.clone());
        let begun = tokio::spawn(async move { a.begun().await });
        let forced = tokio::spawn(async move {
            let mut f = std::pin::pin!(b.forced());
            // Polled once before the beginning and once after, without completing.
            let pending = |f: &mut Pin<&mut Step<'_>>, cx: &mut Context<'_>| {
                Poll::Ready(f.as_mut().poll(cx).is_pending())
            };
            assert!(std::future::poll_fn(|cx| pending(&mut f, cx)).await);
            b.begun().await;
            assert!(std::future::poll_fn(|cx| pending(&mut f, cx)).await);
            f.await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!begun.is_finished() && !forced.is_finished());
        s.begin();
        tokio::time::timeout(Duration::from_secs(5), begun)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!forced.is_finished());
        s.force();
        tokio::time::timeout(Duration::from_secs(5), forced)
            .await
            .unwrap()
            .unwrap();
        // Once a step is taken, a new waiter completes at once.
        s.begun().await;
        s.forced().await;
    }

    #[tokio::test]
    async fn a_task_polling_forced_wakes_at_the_beginning_for_begun_seen() {
        let s = Shutdown::default();
        let t = s.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = t.forced() => "forced",
                _ = t.begun_seen() => "begun",
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.begin();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap();
        assert_eq!(r.unwrap(), "begun");
    }
}
