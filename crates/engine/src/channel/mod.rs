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
//! **Ids.** An event published without an id gets `<epoch>-<n>`: `n` counts from 1, and
//! the epoch names this channel's life (its creation time in ms and random digits, in base
//! 36). A client that resumes with an id from another life of the channel (the process
//! restarted, or the channel was deleted and made again) finds no match and gets the
//! `missed` event below, never events that merely share a number with the ones it saw.
//!
//! **Missed events.** When the last event id is not in history (older than what history
//! keeps, or unknown), the subscriber first receives an event named `missed` whose data is
//! `{"lastEventId": <its id>, "firstAvailableId": <oldest id kept or null>}`, then all of
//! history, then live events.
//!
//! **Slow subscribers.** A subscriber is behind when its socket is full (the kernel refused
//! bytes and its connection has not written them since) and its queue holds the channel's
//! high-water mark or more, or when its queue would pass the hard limit
//! ([`QueueLimits::max_buffered`]) whatever its socket does. A subscriber that reads is not
//! judged by the size of a burst: what one publish or one turn of publishes queues for it
//! is written out as fast as it reads. (On hyper's connections, which do not report their
//! socket, a queue at the mark counts as behind.) When a publish finds a subscriber behind,
//! the channel's [`SlowClient`] policy applies: `Close` (the default) ends that connection,
//! so the browser reconnects and resumes from history; `DropOldest` discards the oldest
//! queued events to make room and counts them in [`ChannelMetrics::dropped`]. Either way
//! the others are not slowed and memory stays bounded.
//!
//! **Fan-out.** Once a subscriber came from a tokio runtime (a channel-served route), a
//! publish only logs the event for the channel's fan-out task on that runtime and returns.
//! The task sweeps the subscribers one after another, handing each everything published
//! since its last turn in one piece: to a subscriber with nothing waiting it writes the
//! bytes straight to the socket (one `send`, no wake-up of its connection), otherwise it
//! queues them as above. When publishes outrun a sweep, each subscriber still gets one
//! write per sweep, however many events it carries. A subscriber receives only events
//! published after it subscribed (earlier ones come from history, or not at all). Without
//! a runtime (a channel used on its own) a publish queues for every subscriber itself, as
//! it also does when more than [`PENDING_LIMIT`] bytes are logged; [`Channel::close`]
//! first hands out everything published.
//!
//! WebSocket subscribers ([`WsSender::subscribe`](crate::ws::WsSender::subscribe)) are
//! swept after the SSE ones, in the same way: each event as one text frame whose bytes all
//! share, under the same policy (see `ws/socket.rs`).

mod fanout;
mod history;
mod positions;
mod redis;
mod shared;
mod subscribers;

pub use self::positions::Positions;
pub use self::redis::{RedisConfig, RedisHub, RedisMetrics};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::compress::{Coding, CrcPart};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::request::Request;
use crate::response::{IntoResponse, Response};
use crate::stream::{Event, QueueLimits, SseResponse, StreamSender};
#[cfg(test)]
use fanout::SWEEP_STEP;
use fanout::{serve, serve_ws, Fan, FanOut, Frame, Tally};
use history::{epoch, History, Resume};
use shared::{Shared, Waiting};
use subscribers::{ws_text_frame, Subscribers, WsSubs};

/// Bytes published and not yet handed out by the fan-out task past which the publisher
/// hands them out itself (as a channel without a runtime does): a publisher that outruns
/// the task is slowed down instead of growing memory.
pub const PENDING_LIMIT: usize = 64 * 1024;

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
    /// Event copies handed to subscribers, written to their sockets or queued (replays
    /// count in `replayed`): by `publish` itself, or by the fan-out task shortly after.
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

struct State {
    /// This channel's life, the prefix of the ids it gives (see the module doc).
    epoch: Box<str>,
    next_id: u64,
    history: History,
    subs: Subscribers,
    closed: bool,
    /// Frames published so far (events and raw frames): the last one's sequence number.
    seq: u64,
    fan: Fan,
    /// WebSocket subscribers: each event's data goes to them as a text frame.
    ws: WsSubs,
    /// False for a shared channel until its history is loaded from Redis.
    ready: bool,
    /// Subscribers that came before it was ready.
    waiting: Vec<Waiting>,
}

struct Inner {
    name: String,
    options: ChannelOptions,
    shared: Option<Shared>,
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
/// assert!(id.ends_with("-1"), "{id}: this channel's epoch, then its first number");
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
        Self::make(name.into(), options, None)
    }

    /// A channel shared through Redis by every process that makes one of this name with a
    /// hub on the same Redis and key prefix (see [`RedisHub`]): publishes go to its Redis
    /// stream, and its subscribers receive what any process published, with Redis's ids.
    /// A process keeps one shared channel per name and hub.
    pub fn shared(name: impl Into<String>, options: ChannelOptions, hub: &RedisHub) -> Self {
        let name = name.into();
        let key = hub.key(&name);
        let shared = Shared {
            hub: hub.clone(),
            key: key.clone(),
        };
        let ch = Self::make(name, options, Some(shared));
        hub.watch(key, &ch);
        ch
    }

    fn make(name: String, options: ChannelOptions, shared: Option<Shared>) -> Self {
        let ready = shared.is_none();
        let history = History::new(
            options.history,
            options.history_bytes,
            options.history_max_age,
        );
        Channel {
            inner: Arc::new(Inner {
                name,
                options,
                shared,
                state: Mutex::new(State {
                    epoch: epoch().into_boxed_str(),
                    next_id: 1,
                    history,
                    subs: Subscribers::default(),
                    closed: false,
                    seq: 0,
                    fan: Fan::default(),
                    ws: WsSubs::default(),
                    ready,
                    waiting: Vec::new(),
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
    /// event's own, or the next number in sequence). Subscribers receive it in the order
    /// of publishing, at once or from the channel's fan-out task (see the module's doc).
    ///
    /// A [shared](Self::shared) channel queues the event for Redis and returns an empty
    /// string: its id is the one Redis assigns, which [`publish_async`](Self::publish_async)
    /// resolves with. Subscribers here receive it, as everywhere, once read back from Redis.
    ///
    /// # Errors
    /// [`Error::is_closed`] after [`close`](Self::close); for a shared channel,
    /// [`Error::is_invalid_argument`] for an event with an id of its own and
    /// [`Error::is_redis`] when the hub's buffer is full (nothing is queued).
    pub fn publish(&self, event: Event) -> Result<String> {
        if let Some(shared) = &self.inner.shared {
            let frame = self.shared_frame(&event)?;
            shared
                .hub
                .enqueue(shared.key.clone(), self.inner.options.history, frame, None)?;
            return Ok(String::new());
        }
        let mut st = self.lock();
        if st.closed {
            return Err(Error::closed());
        }
        let (id, event) = match event.get_id() {
            Some(id) => (id.to_string(), event),
            None => {
                let id = format!("{}-{}", st.epoch, st.next_id);
                st.next_id += 1;
                let ev = event.id(id.clone())?;
                (id, ev)
            }
        };
        let frame = event.encode();
        let ws = (st.ws.len > 0).then(|| ws_text_frame(event.get_data().unwrap_or("")));
        st.history.expire();
        st.history.push(id.clone(), frame.clone());
        self.inner.counters.published.fetch_add(1, Relaxed);
        self.hand_out(st, frame, true, ws);
        Ok(id)
    }

    /// Sends already-encoded bytes to every subscriber without an id or history entry
    /// (e.g. a comment). On a shared channel, to this process's subscribers only.
    ///
    /// # Errors
    /// [`Error::is_closed`] after [`close`](Self::close).
    pub fn broadcast_raw(&self, frame: Bytes) -> Result<()> {
        let st = self.lock();
        if st.closed {
            return Err(Error::closed());
        }
        self.hand_out(st, frame, false, None);
        Ok(())
    }

    /// Gives a published frame its sequence number and logs it for the fan-out task, or
    /// hands it out at once (no runtime, or too much logged). `is_event` says whether it
    /// counts as an event in `delivered` and the server's `events_sent` (a comment does
    /// not); `ws` is the event as a WebSocket frame, when there are WebSocket subscribers.
    fn hand_out(
        &self,
        mut st: MutexGuard<'_, State>,
        bytes: Bytes,
        is_event: bool,
        ws: Option<Bytes>,
    ) {
        st.seq += 1;
        let seq = st.seq;
        st.fan.log_bytes += bytes.len();
        st.fan.log.push(Frame {
            seq,
            bytes,
            is_event,
            ws,
            ws_deflate: None,
            coded: Vec::new(),
        });
        let runtime = match &st.fan.runtime {
            Some(rt) if st.fan.log_bytes <= PENDING_LIMIT => rt.clone(),
            _ => {
                let tally = self.drain(&mut st);
                drop(st);
                self.count(tally);
                return;
            }
        };
        if !st.fan.running {
            st.fan.running = true;
            // The task starts a sweep at once.
            st.fan.cursor = usize::MAX;
            drop(st);
            let task = FanOut {
                ch: self.clone(),
                done: false,
            };
            runtime.spawn(task.run());
        }
    }

    fn drop_oldest(&self) -> bool {
        self.inner.options.slow_client == SlowClient::DropOldest
    }

    /// Hands out, here and now and without writing to sockets, whatever a subscriber was
    /// not given yet.
    fn drain(&self, st: &mut State) -> Tally {
        let mut tally = Tally::default();
        if !st.fan.log.is_empty() {
            serve(
                &mut st.subs,
                &mut st.fan,
                0..usize::MAX,
                false,
                self.drop_oldest(),
                &mut tally,
            );
            let (all, d) = (0..usize::MAX, self.drop_oldest());
            serve_ws(&mut st.ws, &mut st.fan, all, false, d, &mut tally);
            st.fan.clear_log(st.seq);
        }
        tally
    }

    fn count(&self, t: Tally) {
        let c = &self.inner.counters;
        c.dropped.fetch_add(t.dropped, Relaxed);
        c.closed_slow.fetch_add(t.closed_slow, Relaxed);
        c.delivered.fetch_add(t.delivered, Relaxed);
        if let Some(m) = t.metrics {
            Metrics::add(&m.events_sent, t.delivered);
            Metrics::add(&m.bytes_sent, t.bytes_through);
            if t.closed_slow > 0 {
                let msg = format!(
                    "channel {:?}: {} subscriber(s) fell behind and were cut (they reconnect and resume)",
                    self.inner.name, t.closed_slow
                );
                m.warn("slow_subscribers", msg, None, None);
            }
        }
    }

    /// Subscribes a stream: replays what it missed after `last_event_id` (if given), then
    /// it receives every published event until its client leaves (it is removed at once) or
    /// the channel closes (its stream ends).
    pub fn subscribe(&self, stream: &StreamSender, last_event_id: Option<&str>) -> Subscribed {
        self.subscribe_coded(stream, last_event_id, None)
    }

    /// [`subscribe`](Self::subscribe) for a stream compressed with `coding` (see
    /// [`crate::compress::Coding`]): it is given each frame as the channel compressed it
    /// for all of that coding's subscribers.
    pub(crate) fn subscribe_coded(
        &self,
        stream: &StreamSender,
        last_event_id: Option<&str>,
        coding: Option<Coding>,
    ) -> Subscribed {
        self.subscribe_with(stream, last_event_id, coding, None)
    }

    /// Subscribes a stream that may read several channels: it resumes after its position
    /// in this channel, and its last event id names its position in each (see
    /// [`Positions`]). Make one `Positions` per stream from the request's last event id.
    pub fn subscribe_at(&self, stream: &StreamSender, positions: &Arc<Positions>) -> Subscribed {
        let last = positions.resume(self.name());
        self.subscribe_with(stream, last.as_deref(), None, Some(positions))
    }

    fn subscribe_with(
        &self,
        stream: &StreamSender,
        last_event_id: Option<&str>,
        coding: Option<Coding>,
        pos: Option<&Arc<Positions>>,
    ) -> Subscribed {
        if let Some(c) = coding {
            // First, so that even an empty stream is a valid one of its coding.
            stream.set_coding(c);
        }
        let mut st = self.lock();
        if st.closed {
            drop(st);
            stream.end();
            return Subscribed {
                replayed: 0,
                missed: false,
            };
        }
        if !st.ready {
            let last = last_event_id.map(str::to_string);
            st.waiting
                .push((stream.clone(), last, coding, pos.cloned()));
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
        let mut replay = Bytes::new();
        if let Some(last) = last_event_id {
            // A position naming no event: the channel had none when the stream subscribed.
            let resume = match (pos, last) {
                (Some(_), "") => st.history.all(),
                _ => st.history.resume(last),
            };
            let entries = match resume {
                Resume::After(it) => it,
                Resume::Missed(it) => {
                    out.missed = true;
                    let notice = serde_json::json!({
                        "lastEventId": last,
                        "firstAvailableId": st.history.oldest_id(),
                    });
                    let notice = Event::new()
                        .event("missed")
                        .data(notice.to_string())
                        .encode();
                    let _ = push_replay(stream, coding, notice);
                    it
                }
            };
            // Replay ignores the high-water mark: history is bounded, and the client asked
            // for exactly these events. Compressed, it is one piece; for a stream with
            // positions, one chunk with the id frame after it (queued below).
            match coding {
                _ if pos.is_some() => {
                    let mut all = bytes::BytesMut::new();
                    for e in entries {
                        all.extend_from_slice(&e.frame);
                        out.replayed += 1;
                    }
                    replay = all.freeze();
                }
                None => {
                    for e in entries {
                        if stream.push_unbounded(e.frame.clone(), None).is_err() {
                            break;
                        }
                        out.replayed += 1;
                    }
                }
                Some(_) => {
                    let mut all = bytes::BytesMut::new();
                    for e in entries {
                        all.extend_from_slice(&e.frame);
                        out.replayed += 1;
                    }
                    if !all.is_empty() && push_replay(stream, coding, all.freeze()).is_err() {
                        out.replayed = 0;
                    }
                }
            }
        }
        if st.fan.runtime.is_none() {
            st.fan.runtime = tokio::runtime::Handle::try_current().ok();
        }
        let sent = st.seq;
        let pos = pos.map(|p| {
            let at = st.history.newest_id().unwrap_or_default().to_string();
            let (slot, queued) = p.add(self.name(), at, |f| {
                let mut chunk = bytes::BytesMut::from(&replay[..]);
                chunk.extend_from_slice(f.as_deref().unwrap_or_default());
                chunk.is_empty() || push_replay(stream, coding, chunk.freeze()).is_ok()
            });
            if !queued {
                out.replayed = 0;
            }
            (p.clone(), slot)
        });
        self.inner
            .counters
            .replayed
            .fetch_add(out.replayed as u64, Relaxed);
        stream.count_events(out.replayed as u64);
        let key = st.subs.insert(stream.clone(), sent, coding, pos);
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

    /// Whether `other` is this channel (or a clone of it).
    pub(crate) fn same(&self, other: &Channel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// An SSE response subscribed to this channel, resuming from the request's last event
    /// id. This is what a channel-served route does for each request. When the server
    /// compresses responses and the client accepts gzip or zstd, the stream carries the
    /// channel's compression of each event, made once for all subscribers of that coding.
    pub fn sse_response(&self, req: &Request) -> Response {
        let sse = SseResponse::with_limits(self.inner.options.queue);
        let tx = sse.sender();
        let coding = req.offered();
        self.subscribe_coded(tx.stream(), req.last_event_id().as_deref(), coding);
        let mut res = sse.into_response();
        // Never given a compressor of its own.
        res.extensions_mut().insert(crate::compress::Broadcast);
        if let Some(c) = coding {
            let headers = res.headers_mut();
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static(c.encoding.as_str()),
            );
            headers.append(
                http::header::VARY,
                http::HeaderValue::from_static("accept-encoding"),
            );
        }
        res
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        let st = self.lock();
        st.subs.len + st.ws.len
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
        if let Some(shared) = &self.inner.shared {
            shared.hub.unwatch(&shared.key);
        }
        let (subs, waiting, tally, ws) = {
            let mut st = self.lock();
            st.closed = true;
            st.history.clear();
            // What was published before still reaches everyone.
            let tally = self.drain(&mut st);
            (
                st.subs.take_all(),
                std::mem::take(&mut st.waiting),
                tally,
                st.ws.take_all(),
            )
        };
        self.count(tally);
        for s in subs {
            s.end();
        }
        for s in ws {
            s.end();
        }
        for (s, _, _, _) in waiting {
            s.end();
        }
    }

    /// True for a channel [shared](Self::shared) through Redis.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }
}

/// Queues a piece outside the fan-out's frames (a replay, a notice) for a subscriber,
/// compressed for it if it has a coding.
fn push_replay(stream: &StreamSender, coding: Option<Coding>, plain: Bytes) -> Result<()> {
    match coding {
        None => stream.push_unbounded(plain, None),
        Some(c) => {
            let part = CrcPart::of(&plain);
            stream.push_unbounded(c.compress(&plain)?, Some(&part))
        }
    }
}

impl crate::app::Handler for Channel {
    fn call(&self, req: Request) -> futures_util::future::BoxFuture<'static, Response> {
        Box::pin(std::future::ready(self.sse_response(&req)))
    }
}

#[cfg(test)]
mod races;
#[cfg(test)]
mod tests;
