//! A bounded, byte-counted, single-consumer queue that feeds a response body.
//!
//! The producer side ([`StreamSender`], `sender`) is cheap to clone and may be held by a
//! handler task, a front end (JS) and any number of broadcast channels at once
//! (`broadcast`: the subscriber policy). The consumer side (`QueueReceiver`, `receiver`)
//! is the response [`Body`](crate::Body): the connection pulls from it as the socket
//! accepts bytes, so the amount of memory one slow client can pin is bounded by the
//! high-water mark (for cooperating producers) and by a hard limit (for producers that
//! ignore it).
//!
//! On the direct HTTP/1.1 path the connection may also lend its socket to the producers
//! as a [`Sink`](crate::wire::Sink): a producer's write that finds the queue empty and
//! nothing in flight goes to the sink, and what the socket does not take is queued, already
//! framed, for the connection to write. The queue decides only when that may happen.

mod broadcast;
mod receiver;
mod sender;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::compress::{Coding, CrcPart, GzipTally};
use crate::metrics::Metrics;
use crate::wire::Sink;

pub use crate::wire::sink::MAX_VECTORED;
pub(crate) use broadcast::Pushed;
pub(crate) use receiver::QueueReceiver;

/// Default high-water mark of a stream queue: 64 KiB.
pub const DEFAULT_HIGH_WATER_MARK: usize = 64 * 1024;

/// Limits of a stream queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Bytes queued at or above which the queue reports "full" (`write` returns false,
    /// `try_send` fails, `send` waits).
    pub high_water_mark: usize,
    /// Bytes queued past which a `write` that ignored backpressure ends the stream with an
    /// error instead of growing memory. At least `high_water_mark`.
    pub max_buffered: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits::with_high_water_mark(DEFAULT_HIGH_WATER_MARK)
    }
}

impl QueueLimits {
    /// Limits with the given high-water mark and a hard limit of 64 times it (at least
    /// 8 MiB): room for ordinary synchronous bursts (a Node producer writing a few MiB in one
    /// loop while the client reads), still a bound for a producer that never waits.
    pub fn with_high_water_mark(high_water_mark: usize) -> Self {
        let high_water_mark = high_water_mark.max(1);
        QueueLimits {
            high_water_mark,
            max_buffered: (high_water_mark.saturating_mul(64)).max(8 << 20),
        }
    }
}

/// One per stream, so kept lean (an idle SSE subscriber is mostly this, its connection
/// task and its socket): what most streams never use lives in [`Rare`], allocated on first
/// use, and the [`Notify`] only exists once something waits on it.
pub(crate) struct Shared {
    state: Mutex<State>,
    limits: QueueLimits,
    /// Woken when queued bytes fall below the high-water mark, and when the stream closes.
    /// Created by the first waiter (before it checks the state under the lock, so a change
    /// made under the lock either is seen by that check or finds the `Notify` to wake).
    changed: OnceLock<Box<Notify>>,
    metrics: OnceLock<Arc<Metrics>>,
}

type Callback = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    queued: usize,
    rx_waker: Option<Waker>,
    /// The connection's socket, while the consumer lets producers write to it themselves
    /// (see [`QueueReceiver::attach_sink`]).
    sink: Option<Sink>,
    /// The consumer took bytes it may not have written yet: until it comes back for more,
    /// a producer may not write to the sink (its bytes would overtake them).
    in_flight: bool,
    /// The front chunk is the rest of a write made through the sink: already framed.
    front_framed: bool,
    /// Bytes went through the sink since the consumer last asked (see
    /// [`QueueReceiver::claim_heartbeat`]).
    wrote_through: bool,
    /// Whether the client takes what it is given (see [`Stall`]).
    stall: Stall,
    /// The first close callback (a channel subscription); more go to [`Rare`].
    on_close: Option<Callback>,
    rare: Option<Box<Rare>>,
    /// The producer has finished; the body ends once the queue is empty.
    ended: bool,
    /// The producer failed; the body yields `rare.error` (the connection is cut).
    failed: bool,
    /// The body was dropped: the client has gone or the response was discarded.
    receiver_gone: bool,
}

/// Whether a subscriber's socket takes bytes, for [`StreamSender::push_with_policy`].
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The consumer does not report its socket's stalls (hyper's connections): taken as
    /// stalled whenever bytes are queued.
    #[default]
    Unreported,
    /// The consumer reports stalls ([`QueueReceiver::report_stalls`]), and the socket took
    /// the last bytes offered.
    Flowing,
    /// The socket refused bytes (a write through the sink, or the consumer's own write,
    /// would block) and the consumer has not come back for more since: the client is not
    /// reading what it was given.
    Stalled,
}

/// The parts of a queue's state that most streams never use.
#[derive(Default)]
struct Rare {
    /// Why the producer failed, or why an ended stream is cut after what it queued.
    error: String,
    /// Ended by [`StreamSender::end_truncated`]: once what is queued is written the body
    /// yields `error` instead of its end.
    truncated: bool,
    /// Close callbacks after the first.
    on_close: Vec<Callback>,
    /// Run (once) when the queue falls below its high-water mark: see
    /// [`StreamSender::on_ready`].
    on_ready: Option<Callback>,
    /// SSE events queued before the body was attached to a server (and its metrics).
    events_before_attach: u64,
    /// Payload bytes that went to the wire (through the sink or taken by the consumer),
    /// counted once [`StreamSender::count_bytes`] asked for it (an access log).
    sent: Option<u64>,
    /// A broadcast's compression of this stream (see [`StreamSender::set_coding`]).
    coded: Option<Coded>,
}

/// A stream of compressed pieces shared by a broadcast: its coding and what its end needs.
struct Coded {
    coding: Coding,
    /// The plaintext so far, for the gzip trailer.
    tally: GzipTally,
    /// gzip pieces were dropped (a slow subscriber under the drop-oldest policy): the
    /// trailer would not match, so the stream is cut at its end instead.
    broken: bool,
    /// The end of the coding was handed to the consumer.
    finished: bool,
}

impl Coded {
    fn new(coding: Coding) -> Coded {
        Coded {
            coding,
            tally: GzipTally::default(),
            broken: false,
            finished: false,
        }
    }
}

impl State {
    /// Records whether the socket refused bytes, for a consumer that reports stalls.
    fn set_stalled(&mut self, stalled: bool) {
        if self.stall != Stall::Unreported {
            self.stall = if stalled {
                Stall::Stalled
            } else {
                Stall::Flowing
            };
        }
    }

    fn is_closed(&self) -> bool {
        self.receiver_gone || self.ended || self.failed
    }

    /// Adds `n` to the bytes sent, when they are counted.
    fn count_sent(&mut self, n: usize) {
        if let Some(sent) = self.rare.as_mut().and_then(|r| r.sent.as_mut()) {
            *sent += n as u64;
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Counts `part` in a coded stream's trailer.
    fn tally(&mut self, part: Option<&CrcPart>) {
        if let (Some(part), Some(c)) = (part, self.rare.as_mut().and_then(|r| r.coded.as_mut())) {
            c.tally.add(part);
        }
    }

    /// Fails the stream: queued bytes are discarded; returns the body's waker.
    fn fail(&mut self, reason: String) -> Option<Waker> {
        self.failed = true;
        self.rare().error = reason;
        self.chunks = VecDeque::new();
        self.front_framed = false;
        self.queued = 0;
        self.rx_waker.take()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (each
        // critical section is a few field updates), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for the producer: below the high-water mark, and no write through the sink
    /// left a rest for the connection to write (the socket was full: wait until the
    /// connection takes it, so that the queue holds at most one write past the mark).
    fn has_room(&self, st: &State) -> bool {
        st.queued < self.limits.high_water_mark && !st.front_framed
    }

    fn notify_waiters(&self) {
        if let Some(n) = self.changed.get() {
            n.notify_waiters();
        }
    }

    fn changed(&self) -> &Notify {
        self.changed.get_or_init(|| Box::new(Notify::new()))
    }
}

/// The answer of [`QueueReceiver::claim_heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Heartbeat {
    /// Send these bytes now (the comment, in the stream's coding if it has one).
    Send(Bytes),
    /// Not needed: bytes went out through the sink since the last one was due.
    Active,
    /// Not now: bytes are queued.
    Busy,
}

/// The answer of [`StreamSender::on_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// The queue is below its high-water mark now; the callback was dropped.
    Ready,
    /// The stream is closed; the callback was dropped.
    Closed,
    /// The callback runs once the queue falls below the mark (not if the stream closes
    /// first: watch [`StreamSender::on_close`] for that).
    Armed,
}

/// Creates a queue: the producer half and the consumer half that a [`Body`](crate::Body)
/// wraps.
pub(crate) fn queue(limits: QueueLimits) -> (StreamSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        limits,
        changed: OnceLock::new(),
        metrics: OnceLock::new(),
    });
    (
        StreamSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

/// The producer half of a stream: write bytes, wait for room, learn that the client left.
///
/// Cloning is cheap; all clones feed the same response.
#[derive(Clone)]
pub struct StreamSender {
    shared: Arc<Shared>,
}

impl fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("buffered", &self.buffered())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl StreamSender {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }
}

/// A [`StreamSender`] that does not keep its queue alive.
pub(crate) struct WeakSender(std::sync::Weak<Shared>);

impl WeakSender {
    pub(crate) fn upgrade(&self) -> Option<StreamSender> {
        self.0.upgrade().map(|shared| StreamSender { shared })
    }
}
