//! The streams a server has open, so that shutdown can end them cleanly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::stream::StreamSender;

#[derive(Debug, Default)]
pub(crate) struct StreamRegistry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, StreamSender>>,
}

impl StreamRegistry {
    /// Tracks `stream` until its body is dropped.
    pub(crate) fn track(self: &Arc<Self>, stream: StreamSender) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stream.clone());
        // Weak: the registry must not keep itself alive through the streams it tracks.
        let weak: Weak<Self> = Arc::downgrade(self);
        stream.on_close(move || {
            if let Some(reg) = weak.upgrade() {
                reg.open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
        });
    }

    /// Ends every open stream after what it has queued.
    pub(crate) fn end_all(&self) {
        let open: Vec<StreamSender> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in open {
            s.end();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{QueueLimits, StreamingResponse};
    use crate::IntoResponse;

    #[test]
    fn tracks_until_the_body_is_dropped_and_ends_what_is_open() {
        let reg = Arc::new(StreamRegistry::default());
        let (a, tx_a) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let (b, tx_b) = StreamingResponse::channel("text/plain", QueueLimits::default());
        let (body_a, body_b) = (a.into_response().into_body(), b.into_response().into_body());
        reg.track(tx_a.clone());
        reg.track(tx_b.clone());
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
