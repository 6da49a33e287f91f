//! Broadcast channels: one publish, many SSE subscribers, no per-subscriber work outside
//! the engine.
//!
//! [`Channel::publish`] encodes the event once and hands the same bytes (a reference-counted
//! [`Bytes`]) to every subscriber's bounded queue. Events get ids in order (or keep the id
//! they carry) and stay in a history ring bounded by count, bytes and optionally age, so a
//! client that reconnects with `Last-Event-ID` (or `?lastEventId=`) receives exactly what it
//! missed, then live events, with no gap and no duplicate: replay and registration happen
//! under the same lock as publishing.
//!
//! **Missed events.** When the last event id is not in history (older than what history
//! keeps, or unknown), the subscriber first receives an event named `missed` whose data is
//! `{"lastEventId": <its id>, "firstAvailableId": <oldest id kept or null>}`, then all of
//! history, then live events.
//!
//! **Slow subscribers.** Each subscriber's queue is bounded by the channel's high-water mark.
//! When a publish finds it full, the channel's [`SlowClient`] policy applies: `Close` (the
//! default) ends that connection, so the browser reconnects and resumes from history;
//! `DropOldest` discards the oldest queued events to make room and counts them in
//! [`ChannelMetrics::dropped`]. Either way the others are not slowed and memory stays bounded.

mod history;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::request::Request;
use crate::response::{IntoResponse, Response};
use crate::stream::{Event, Pushed, QueueLimits, SseResponse, StreamSender};
use history::{History, Resume};

/// What to do with a subscriber whose queue is full when an event is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SlowClient {
    /// End its connection; the client reconnects and resumes from history.
    #[default]
    Close,
    /// Drop its oldest queued events to make room, counting them as dropped.
    DropOldest,
}

/// Options of a [`Channel`].
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Events kept for replay. Default: 1000. 0 turns history off.
    pub history: usize,
    /// Bytes of encoded events kept for replay. Default: 4 MiB.
    pub history_bytes: usize,
    /// Age past which events leave history. Default: none.
    pub history_max_age: Option<Duration>,
    /// Policy for full subscriber queues. Default: [`SlowClient::Close`].
    pub slow_client: SlowClient,
    /// Queue limits of subscribers of channel-served routes (high-water mark 64 KiB).
    pub queue: QueueLimits,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            history: 1000,
            history_bytes: 4 << 20,
            history_max_age: None,
            slow_client: SlowClient::Close,
            queue: QueueLimits::default(),
        }
    }
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelMetrics {
    /// Subscribers now.
    pub subscribers: u64,
    /// Events published.
    pub published: u64,
    /// Event copies queued for subscribers by `publish` (replays count in `replayed`).
    pub delivered: u64,
    /// Event copies dropped by the `DropOldest` policy.
    pub dropped: u64,
    /// Event copies sent from history to resuming subscribers.
    pub replayed: u64,
    /// Subscribers closed by the `Close` policy because they fell behind.
    pub closed_slow: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    replayed: AtomicU64,
    closed_slow: AtomicU64,
}

/// The subscribers in slots (a pointer each), a subscriber's key being its slot; freed
/// slots are reused.
#[derive(Default)]
struct Subscribers {
    slots: Vec<Option<StreamSender>>,
    free: Vec<usize>,
    len: usize,
}

impl Subscribers {
    fn insert(&mut self, stream: StreamSender) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(stream);
                slot
            }
            None => {
                self.slots.push(Some(stream));
                self.slots.len() - 1
            }
        }
    }

    /// Frees `slot` (if `queue`, the address of its stream's queue, is still what it
    /// holds: the slot may have been freed and reused since).
    fn remove(&mut self, slot: usize, queue: Option<usize>) {
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        match (&*entry, queue) {
            (Some(s), Some(q)) if s.queue_addr() != q => return,
            (None, _) => return,
            _ => {}
        }
        *entry = None;
        self.free.push(slot);
        self.len -= 1;
    }

    fn take_all(&mut self) -> Vec<StreamSender> {
        self.free = Vec::new();
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect()
    }
}

struct State {
    next_id: u64,
    history: History,
    subs: Subscribers,
    closed: bool,
}

struct Inner {
    name: String,
    options: ChannelOptions,
    state: Mutex<State>,
    counters: Counters,
}

/// A named broadcast channel. Cheap to clone; clones share the channel.
///
/// ```
/// use rat_engine::channel::{Channel, ChannelOptions};
/// use rat_engine::Event;
/// let ch = Channel::new("table", ChannelOptions::default());
/// let id = ch.publish(Event::new().event("update").data("{\"row\":1}")).unwrap();
/// assert_eq!(id, "1");
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// What [`Channel::subscribe`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// Events replayed from history.
    pub replayed: usize,
    /// True when the last event id was not in history (a `missed` event was sent first).
    pub missed: bool,
}

impl Channel {
    /// A new channel.
    pub fn new(name: impl Into<String>, options: ChannelOptions) -> Self {
        let history = History::new(
            options.history,
            options.history_bytes,
            options.history_max_age,
        );
        Channel {
            inner: Arc::new(Inner {
                name: name.into(),
                options,
                state: Mutex::new(State {
                    next_id: 1,
                    history,
                    subs: Subscribers::default(),
                    closed: false,
                }),
                counters: Counters::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The channel's options.
    pub fn options(&self) -> &ChannelOptions {
        &self.inner.options
    }

    /// Publishes an event to every subscriber and into history; returns its id (the
    /// event's own, or the next number in sequence).
    ///
    /// # Errors
    /// [`Error::is_closed`] after [`close`](Self::close).
    pub fn publish(&self, event: Event) -> Result<String> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::closed());
        }
        let (id, event) = match event.get_id() {
            Some(id) => (id.to_string(), event),
            None => {
                let id = st.next_id.to_string();
                st.next_id += 1;
                let ev = event.id(id.clone())?;
                (id, ev)
            }
        };
        let frame = event.encode();
        st.history.expire();
        st.history.push(id.clone(), frame.clone());
        self.fan_out(&mut st, &frame, true);
        self.inner.counters.published.fetch_add(1, Relaxed);
        Ok(id)
    }

    /// Sends already-encoded bytes to every subscriber without an id or history entry
    /// (e.g. a comment).
    ///
    /// # Errors
    /// [`Error::is_closed`] after [`close`](Self::close).
    pub fn broadcast_raw(&self, frame: Bytes) -> Result<()> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::closed());
        }
        self.fan_out(&mut st, &frame, false);
        Ok(())
    }

    /// Queues `frame` for every subscriber. `is_event` says whether it counts as an event
    /// in `delivered` and the server's `events_sent` (a comment does not).
    fn fan_out(&self, st: &mut State, frame: &Bytes, is_event: bool) {
        let drop_oldest = self.inner.options.slow_client == SlowClient::DropOldest;
        let (mut delivered, mut dropped, mut closed_slow) = (0u64, 0u64, 0u64);
        let mut gone: Vec<usize> = Vec::new();
        let mut metrics: Option<Arc<Metrics>> = None;
        for (key, sub) in st.subs.slots.iter().enumerate() {
            let Some(sub) = sub else { continue };
            match sub.push_with_policy(frame.clone(), drop_oldest) {
                Pushed::Queued => delivered += 1,
                Pushed::DroppedOldest(n) => {
                    delivered += 1;
                    dropped += n;
                }
                Pushed::ClosedFull => {
                    closed_slow += 1;
                    gone.push(key);
                }
                Pushed::Closed => gone.push(key),
            }
            if metrics.is_none() {
                metrics = sub.metrics().cloned();
            }
        }
        for key in gone {
            st.subs.remove(key, None);
        }
        let c = &self.inner.counters;
        c.dropped.fetch_add(dropped, Relaxed);
        c.closed_slow.fetch_add(closed_slow, Relaxed);
        if is_event {
            c.delivered.fetch_add(delivered, Relaxed);
            if let Some(m) = metrics {
                Metrics::add(&m.events_sent, delivered);
            }
        }
    }

    /// Subscribes a stream: replays what it missed after `last_event_id` (if given), then
    /// it receives every published event until its client leaves (it is removed at once) or
    /// the channel closes (its stream ends).
    pub fn subscribe(&self, stream: &StreamSender, last_event_id: Option<&str>) -> Subscribed {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            stream.end();
            return Subscribed {
                replayed: 0,
                missed: false,
            };
        }
        st.history.expire();
        let mut out = Subscribed {
            replayed: 0,
            missed: false,
        };
        if let Some(last) = last_event_id {
            let entries = match st.history.resume(last) {
                Resume::After(it) => it,
                Resume::Missed(it) => {
                    out.missed = true;
                    let notice = serde_json::json!({
                        "lastEventId": last,
                        "firstAvailableId": st.history.oldest_id(),
                    });
                    let _ = stream.push_unbounded(
                        Event::new()
                            .event("missed")
                            .data(notice.to_string())
                            .encode(),
                    );
                    it
                }
            };
            for e in entries {
                // Replay ignores the high-water mark: history is bounded, and the client
                // asked for exactly these events.
                if stream.push_unbounded(e.frame.clone()).is_err() {
                    break;
                }
                out.replayed += 1;
            }
            self.inner
                .counters
                .replayed
                .fetch_add(out.replayed as u64, Relaxed);
            stream.count_events(out.replayed as u64);
        }
        let key = st.subs.insert(stream.clone());
        let queue = stream.queue_addr();
        drop(st);
        // Registered after the lock is released: if the client is already gone this runs
        // at once and takes the lock itself.
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        stream.on_close(move || {
            if let Some(inner) = weak.upgrade() {
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                st.subs.remove(key, Some(queue));
            }
        });
        out
    }

    /// An SSE response subscribed to this channel, resuming from the request's last event
    /// id. This is what a channel-served route does for each request.
    pub fn sse_response(&self, req: &Request) -> Response {
        let sse = SseResponse::with_limits(self.inner.options.queue);
        let tx = sse.sender();
        self.subscribe(tx.stream(), req.last_event_id().as_deref());
        sse.into_response()
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.lock().subs.len
    }

    /// True after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The channel's counters.
    pub fn metrics(&self) -> ChannelMetrics {
        let subscribers = self.subscribers() as u64;
        let c = &self.inner.counters;
        ChannelMetrics {
            subscribers,
            published: c.published.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            closed_slow: c.closed_slow.load(Relaxed),
        }
    }

    /// Closes the channel: every subscriber's stream ends after what it has queued,
    /// history is cleared, and later publishes fail.
    pub fn close(&self) {
        let subs = {
            let mut st = self.lock();
            st.closed = true;
            st.history.clear();
            st.subs.take_all()
        };
        for s in subs {
            s.end();
        }
    }
}

impl crate::app::Handler for Channel {
    fn call(&self, req: Request) -> futures_util::future::BoxFuture<'static, Response> {
        let res = self.sse_response(&req);
        Box::pin(std::future::ready(res))
    }
}

#[cfg(test)]
mod tests;
