//! The streams a server has open, so that shutdown can end them cleanly.

use std::sync::Mutex;

use crate::stream::{StreamSender, WeakSender};

/// Weak handles, so that tracking costs a stream one pointer and no close callback; the
/// handles of streams that are over are dropped when the list would grow.
#[derive(Default)]
pub(crate) struct StreamRegistry {
    open: Mutex<Vec<WeakSender>>,
}

impl std::fmt::Debug for StreamRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRegistry").finish_non_exhaustive()
    }
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WeakSender>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks `stream` until its body is dropped.
    pub(crate) fn track(&self, stream: &StreamSender) {
        let mut open = self.lock();
        if open.len() == open.capacity() {
            // Amortised: at most one sweep per doubling of the live streams.
            open.retain(|w| w.upgrade().is_some_and(|s| !s.is_disconnected()));
        }
        open.push(stream.downgrade());
    }

    /// Ends every open stream after what it has queued.
    pub(crate) fn end_all(&self) {
        let open: Vec<StreamSender> = self.lock().iter().filter_map(WeakSender::upgrade).collect();
        for s in open {
            s.end();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock()
            .iter()
            .filter(|w| w.upgrade().is_some_and(|s| !s.is_disconnected()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{QueueLimits, StreamingResponse};
    use crate::IntoResponse;

    #[test]
    fn tracks_until_the_body_is_dropped_and_ends_what_is_open() {
        let reg = StreamRegistry::default();
        let (a, tx_a) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let (b, tx_b) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let (body_a, body_b) = (a.into_response().into_body(), b.into_response().into_body());
        reg.track(&tx_a);
        reg.track(&tx_b);
        assert_eq!(reg.len(), 2);
        drop(body_a);
        assert_eq!(reg.len(), 1);
        reg.end_all();
        assert!(
            tx_b.is_closed() && !tx_b.is_disconnected(),
            "ended, not cut"
        );
        drop(body_b);
        assert_eq!(reg.len(), 0);
    }
}
