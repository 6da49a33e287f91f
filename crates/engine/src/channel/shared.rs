//! The parts of a channel shared through Redis (see [`RedisHub`](super::RedisHub)): its
//! publishes, which go to Redis, and the events and history read back from it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::positions::Positions;
use super::{Channel, RedisHub};
use crate::compress::Coding;
use crate::error::{Error, Result};
use crate::stream::{Event, StreamSender};

/// A subscriber waiting for a shared channel's history.
pub(super) type Waiting = (
    StreamSender,
    Option<String>,
    Option<Coding>,
    Option<Arc<Positions>>,
);

/// A shared channel's hub and stream key.
pub(super) struct Shared {
    pub(super) hub: RedisHub,
    pub(super) key: String,
}

impl Channel {
    /// Publishes an event and resolves with its id once it is known: at once for a local
    /// channel, when Redis has stored it for a [shared](Self::shared) one.
    ///
    /// # Errors
    /// As [`publish`](Self::publish); [`Error::is_redis`] if Redis refused the event or the
    /// hub stopped before sending it.
    pub fn publish_async(
        &self,
        event: Event,
    ) -> impl std::future::Future<Output = Result<String>> + Send + 'static {
        let queued = match &self.inner.shared {
            None => Err(self.publish(event)),
            Some(shared) => self
                .shared_frame(&event)
                .and_then(|frame| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let key = shared.key.clone();
                    let history = self.inner.options.history;
                    shared.hub.enqueue(key, history, frame, Some(tx))?;
                    Ok(rx)
                })
                .map_err(Err),
        };
        async move {
            match queued {
                Err(done) => done,
                Ok(rx) => rx.await.unwrap_or_else(|_| {
                    Err(Error::redis(
                        "the Redis hub stopped before sending the event",
                    ))
                }),
            }
        }
    }

    /// The bytes a shared channel stores for `event` (Redis adds the id).
    pub(super) fn shared_frame(&self, event: &Event) -> Result<Bytes> {
        if self.is_closed() {
            return Err(Error::closed());
        }
        if event.get_id().is_some() {
            return Err(Error::invalid_argument(
                "a channel shared through Redis gets its event ids from Redis: publish without an id",
            ));
        }
        Ok(event.encode())
    }

    /// A shared channel's event read back from Redis: into history and out to subscribers
    /// (SSE and WebSocket).
    pub(super) fn deliver(&self, id: &str, frame: Bytes) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        let ws = (st.ws.len > 0)
            .then(|| super::subscribers::ws_text_frame(&crate::stream::sse::data_of(&frame)));
        st.history.expire();
        st.history.push(id.to_string(), frame.clone());
        self.inner.counters.published.fetch_add(1, Relaxed);
        self.hand_out(st, frame, true, ws);
    }

    /// Redis trimmed entries from the stream that this process's reader had not read: the
    /// subscribers get the `missed` event (as a replay from an id older than history does)
    /// naming the last id handed out and the first one after the gap, and history is
    /// emptied, so that a resume from an id before the gap also gets `missed` rather than
    /// skipping it.
    pub(super) fn gap(&self, last: &str, first: &str) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.history.clear();
        let notice = serde_json::json!({ "lastEventId": last, "firstAvailableId": first });
        let frame = Event::new()
            .event("missed")
            .data(notice.to_string())
            .encode();
        self.hand_out(st, frame, false, None);
    }

    /// A shared channel's history as loaded from Redis (oldest first); then the
    /// subscribers that waited for it are served.
    pub(super) fn loaded(&self, history: Vec<(String, Bytes)>) {
        let waiting = {
            let mut st = self.lock();
            if !st.ready {
                for (id, frame) in history {
                    st.history.push(id, frame);
                }
                st.ready = true;
            }
            std::mem::take(&mut st.waiting)
        };
        for (stream, last, coding, pos) in waiting {
            self.subscribe_with(&stream, last.as_deref(), coding, pos.as_ref());
        }
    }
}

/// Whether Redis stream id `a` (`<ms>-<n>`) is later than `b`; false for ids that do not
/// parse.
pub(super) fn id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, n) = id.split_once('-')?;
        Some((ms.parse::<u64>().ok()?, n.parse::<u64>().ok()?))
    };
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a > b)
}

#[cfg(test)]
mod tests {
    use super::id_after;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(id_after("1700000000001-0", "1700000000000-9"));
        assert!(id_after("5-10", "5-9"));
        assert!(!id_after("5-9", "5-9"));
        assert!(!id_after("5-9", "5-10"));
        assert!(!id_after("x", "5-9"));
    }
}
