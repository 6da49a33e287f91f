//! A bounded, byte-counted, single-consumer queue that feeds a response body.
//!
//! The producer side ([`StreamSender`]) is cheap to clone and may be held by a handler task,
//! a front end (JS) and any number of broadcast channels at once. The consumer side is the
//! response [`Body`](crate::Body): hyper pulls from it as the socket accepts bytes, so the
//! amount of memory one slow client can pin is bounded by the high-water mark (for
//! cooperating producers) and by a hard limit (for producers that ignore it).
//!
//! On the direct HTTP/1.1 path the connection may also attach its socket as a *sink*: a
//! producer's `write` that finds the queue empty and nothing in flight goes straight to
//! the socket from the producer's thread (no copy, no hand-over to the connection's task,
//! no wake-up), as `write` does on a Node or Bun socket. What the socket does not take
//! is queued, already framed, for the connection to write.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Default high-water mark of a stream queue: 64 KiB.
pub const DEFAULT_HIGH_WATER_MARK: usize = 64 * 1024;

/// The largest frame the body hands to hyper when it coalesces queued chunks.
const MAX_COALESCE: usize = 64 * 1024;

/// Frames up to this size written through the sink are copied into one buffer first.
const SMALL_FRAME: usize = 1024;

/// The most buffers [`StreamSender::write_slices`] sends in one vectored `send`.
pub const MAX_VECTORED: usize = 64;

/// The size line of an HTTP/1.1 chunk of `len` bytes (`{len:x}\r\n`), written into `out`
/// without `core::fmt` (a few % of a small write's user time).
pub(crate) fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    let mut at = 16;
    let mut n = len;
    loop {
        at -= 1;
        out[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out[16] = b'\r';
    out[17] = b'\n';
    &out[at..]
}

/// Appends `chunks` as one chunk, framed as HTTP/1.1 chunked if `chunked` (nothing for
/// no bytes: an empty chunk would end the body).
fn frame_into(buf: &mut BytesMut, chunks: &[&[u8]], chunked: bool) {
    let len: usize = chunks.iter().map(|c| c.len()).sum();
    if len == 0 {
        return;
    }
    // The size line (at most 18 bytes) and the CRLF.
    buf.reserve(len + if chunked { 20 } else { 0 });
    if chunked {
        buf.extend_from_slice(chunk_size_line(len, &mut [0; 18]));
    }
    chunks.iter().for_each(|c| buf.extend_from_slice(c));
    if chunked {
        buf.extend_from_slice(b"\r\n");
    }
}

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

/// What happened to a chunk offered to a full subscriber queue (see
/// [`StreamSender::push_with_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping this many older chunks.
    DroppedOldest(u64),
    /// The queue was full and the stream was closed.
    ClosedFull,
    /// The stream was already closed.
    Closed,
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
    sink: Option<crate::sys::Sink>,
    /// The sink's bytes are framed as HTTP/1.1 chunks.
    sink_chunked: bool,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heartbeat {
    /// Send it now.
    Send,
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
        // A panic while holding this lock cannot leave the state inconsistent (each
        // critical section is a few field updates), so a poisoned lock is still usable.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts loading this queue's lock and state into the cache: for a channel's sweep,
    /// a few subscribers ahead of the one it is writing to (see [`crate::sys`]).
    #[inline]
    pub(crate) fn prefetch(&self) {
        let state: *const Mutex<State> = &self.shared.state;
        crate::sys::prefetch(state);
        crate::sys::prefetch(state.cast::<u8>().wrapping_add(64));
    }

    /// The queue's limits.
    pub fn limits(&self) -> QueueLimits {
        self.shared.limits
    }

    /// Bytes queued and not yet taken by the connection.
    pub fn buffered(&self) -> usize {
        self.lock().queued
    }

    /// True once the client has gone or the stream was ended or aborted.
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// True when the client has gone (the body was dropped).
    pub fn is_disconnected(&self) -> bool {
        self.lock().receiver_gone
    }

    /// Writes a chunk whatever the queue holds, Node `stream.write` style, and returns
    /// whether the queue is still below its high-water mark (`false` means: wait for
    /// [`ready`](Self::ready) before writing more).
    ///
    /// # Errors
    /// [`Error::is_closed`] if the stream is closed; [`Error::is_full`] if this write would
    /// pass the hard limit, in which case the stream is aborted rather than grow memory.
    pub fn write(&self, chunk: Bytes) -> Result<bool> {
        self.write_any(chunk, |c| c)
    }

    /// [`write`](Self::write) for borrowed bytes: copied only if they cannot go straight
    /// to the socket (see [`QueueReceiver::attach_sink`]).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_slice(&self, chunk: &[u8]) -> Result<bool> {
        self.write_any(chunk, Bytes::copy_from_slice)
    }

    fn write_any<C: AsRef<[u8]>>(&self, chunk: C, own: impl FnOnce(C) -> Bytes) -> Result<bool> {
        let mut st = self.lock();
        if st.is_closed() {
            return Err(Error::closed());
        }
        let len = chunk.as_ref().len();
        if let Some(rest) = self.write_through(&mut st, &[chunk.as_ref()]) {
            self.count_sent(len);
            return Ok(match rest {
                None => true,
                Some(rest) => self.push_locked(st, rest),
            });
        }
        let st = self.check_hard_limit(st, len)?;
        Ok(self.push_locked(st, own(chunk)))
    }

    /// Writes several buffers as one chunk of the stream, Node `writev` style: through the
    /// sink in one vectored `send` per [`MAX_VECTORED`] buffers when it has room (no copy),
    /// otherwise copied into the queue. Returns like [`write`](Self::write).
    ///
    /// A front end that collects the writes of one turn of its event loop hands them over
    /// here: on loopback, 8 writes of 64 KiB sent as one cost the kernel 9 segments
    /// instead of 16, and one syscall instead of 8.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_slices(&self, chunks: &[&[u8]]) -> Result<bool> {
        let mut st = self.lock();
        if st.is_closed() {
            return Err(Error::closed());
        }
        let mut from = 0;
        while from < chunks.len() {
            let group = &chunks[from..chunks.len().min(from + MAX_VECTORED)];
            let Some(rest) = self.write_through(&mut st, group) else {
                break;
            };
            self.count_sent(group.iter().map(|c| c.len()).sum());
            from += group.len();
            if let Some(rest) = rest {
                // The socket is full. The rest is the front chunk, already framed: what
                // follows it joins it, framed the same way (one copy either way).
                let mut buf = BytesMut::from(&rest[..]);
                frame_into(&mut buf, &chunks[from..], st.sink_chunked);
                return Ok(self.push_locked(st, buf.freeze()));
            }
        }
        let later = &chunks[from..];
        let len: usize = later.iter().map(|c| c.len()).sum();
        if len == 0 {
            return Ok(self.shared.has_room(&st));
        }
        let st = self.check_hard_limit(st, len)?;
        // Unframed: the body frames what it takes from the queue.
        let mut buf = BytesMut::new();
        frame_into(&mut buf, later, false);
        Ok(self.push_locked(st, buf.freeze()))
    }

    /// Counts bytes written through the sink in the metrics' `bytes_sent`.
    fn count_sent(&self, len: usize) {
        if let Some(m) = self.shared.metrics.get() {
            Metrics::add(&m.bytes_sent, len as u64);
        }
    }

    /// Queuing `len` more bytes would pass the hard limit (and something is queued
    /// already, so one large write on its own is accepted): the stream is aborted and the
    /// write fails. Otherwise hands the lock back.
    fn check_hard_limit<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, State>,
        len: usize,
    ) -> Result<std::sync::MutexGuard<'a, State>> {
        if st.queued + len > self.shared.limits.max_buffered && st.queued > 0 {
            let waker = st.fail(
                "stream aborted: the client did not read and the producer ignored backpressure"
                    .into(),
            );
            self.wake_after_close(st, waker);
            return Err(Error::full(format!(
                "stream buffer passed its hard limit of {} bytes; the stream was aborted",
                self.shared.limits.max_buffered
            )));
        }
        Ok(st)
    }

    /// Writes `data` (at most [`MAX_VECTORED`] buffers, sent as one chunk) straight to the
    /// socket when the consumer allows it (a sink is attached) and the order of bytes is
    /// kept (nothing queued, nothing taken and unwritten): no copy, no hand-over to the
    /// connection's task, no wake-up. `None` when nothing was written (the caller queues
    /// `data`); `Some(None)` when all of it was; `Some(Some(rest))` when the socket took
    /// part of it: `rest`, already framed, is then marked as the front chunk and must be
    /// queued by the caller (which wakes the consumer to write it once the socket has
    /// room). The caller counts `data` in the metrics' `bytes_sent` when it was written: a
    /// channel's sweep counts once for all its subscribers, as reading each queue's
    /// metrics after the `send` was a cache miss per subscriber (~2% of a sweep's CPU).
    fn write_through(&self, st: &mut State, data: &[&[u8]]) -> Option<Option<Bytes>> {
        debug_assert!(data.len() <= MAX_VECTORED);
        let len: usize = data.iter().map(|d| d.len()).sum();
        if len == 0 || st.in_flight || !st.chunks.is_empty() {
            return None;
        }
        let sink = st.sink.as_ref()?;
        let mut size = [0u8; 18];
        let (head, tail): (&[u8], &[u8]) = if st.sink_chunked {
            (chunk_size_line(len, &mut size), b"\r\n")
        } else {
            (b"", b"")
        };
        let total = head.len() + len + tail.len();
        let parts = || {
            std::iter::once(head)
                .chain(data.iter().copied())
                .chain([tail])
        };
        // A plain non-blocking `send`, bypassing tokio's readiness bookkeeping: reading it
        // is a cache miss per socket when a channel writes to thousands in turn (~5% of a
        // sweep). A stale "writable" left behind only costs the connection's own next write
        // one `EAGAIN`.
        let socket = sink.socket();
        let res = if total <= SMALL_FRAME {
            // An event: one buffer and one `write`, cheaper in the kernel than `writev`.
            let mut buf = [0u8; SMALL_FRAME];
            let mut at = 0;
            for p in parts() {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            socket.send(&buf[..total])
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_VECTORED + 2];
            let mut n = 0;
            for p in parts().filter(|p| !p.is_empty()) {
                slices[n] = IoSlice::new(p);
                n += 1;
            }
            socket.send_vectored(&slices[..n])
        };
        let written = match res {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                st.set_stalled(true);
                return None;
            }
            Err(_) => {
                // The consumer's own write meets the error and ends the response.
                st.sink = None;
                return None;
            }
        };
        if written == 0 {
            return None;
        }
        st.wrote_through = true;
        st.set_stalled(written < total);
        // The payload whole: what the socket did not take follows as the framed front chunk,
        // which the consumer does not count again.
        st.count_sent(len);
        if written == total {
            return Some(None);
        }
        // The socket is full: the caller queues the rest, and the producer is told to
        // wait (see `Shared::has_room`).
        let mut rest = BytesMut::with_capacity(total - written);
        let mut skip = written;
        for p in parts() {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            rest.extend_from_slice(&p[skip..]);
            skip = 0;
        }
        st.front_framed = true;
        Some(Some(rest.freeze()))
    }

    /// After the stream closed under `st` (ended, failed, cut): releases the lock, then
    /// wakes whoever waits for room or for the close, and the body.
    fn wake_after_close(&self, st: std::sync::MutexGuard<'_, State>, body: Option<Waker>) {
        drop(st);
        self.shared.notify_waiters();
        if let Some(w) = body {
            w.wake();
        }
    }

    /// Queues a chunk only if the queue is below its high-water mark.
    ///
    /// # Errors
    /// [`Error::is_full`] when at or above the mark (nothing is queued), [`Error::is_closed`]
    /// when the stream is closed.
    pub fn try_send(&self, chunk: Bytes) -> Result<()> {
        let st = self.lock();
        if st.is_closed() {
            return Err(Error::closed());
        }
        if !self.shared.has_room(&st) {
            return Err(Error::full("stream queue is at its high-water mark"));
        }
        self.push_locked(st, chunk);
        Ok(())
    }

    /// Queues a chunk, first waiting until the queue is below its high-water mark.
    ///
    /// # Errors
    /// [`Error::is_closed`] if the client leaves (or the stream ends) before there is room.
    pub async fn send(&self, chunk: Bytes) -> Result<()> {
        if self.ready().await {
            let st = self.lock();
            if st.is_closed() {
                return Err(Error::closed());
            }
            self.push_locked(st, chunk);
            Ok(())
        } else {
            Err(Error::closed())
        }
    }

    /// Queues a chunk ignoring both limits. Only for bounded replays (channel history),
    /// which the client asked for and whose size the channel already caps.
    pub(crate) fn push_unbounded(&self, chunk: Bytes) -> Result<()> {
        let st = self.lock();
        if st.is_closed() {
            return Err(Error::closed());
        }
        self.push_locked(st, chunk);
        Ok(())
    }

    /// Writes `chunk` for a broadcast subscriber straight to its socket when nothing waits
    /// ahead of it (what the socket does not take is queued, as for [`write`](Self::write)).
    /// `None` when it could not: the caller queues it with
    /// [`push_with_policy`](Self::push_with_policy). The caller counts `chunk` in the
    /// metrics' `bytes_sent` when the answer is `Some(Pushed::Queued)`.
    pub(crate) fn push_through(&self, chunk: &[u8]) -> Option<Pushed> {
        let mut st = self.lock();
        if st.is_closed() {
            return Some(Pushed::Closed);
        }
        if let Some(rest) = self.write_through(&mut st, &[chunk])? {
            self.push_locked(st, rest);
        }
        Some(Pushed::Queued)
    }

    /// Queues `chunk` for a broadcast subscriber. A subscriber is behind when its socket
    /// is full (it refused bytes and the consumer has not written them since) and its queue
    /// holds the high-water mark or more, or when the queue would pass the hard limit
    /// whatever the socket does. Then the oldest queued chunks are dropped to make room,
    /// or the stream is closed. A subscriber that reads is not judged by the size of a
    /// burst: what a burst queues at once while its socket takes bytes is written out as
    /// fast as the client reads.
    ///
    /// Never written through the sink: a channel writes through only from its fan-out
    /// task ([`push_through`](Self::push_through)), never from the publisher's thread.
    pub(crate) fn push_with_policy(&self, chunk: Bytes, drop_oldest: bool) -> Pushed {
        let mut st = self.lock();
        if st.is_closed() {
            return Pushed::Closed;
        }
        let limits = &self.shared.limits;
        let behind = st.queued >= limits.high_water_mark && st.stall != Stall::Flowing;
        if behind || st.queued + chunk.len() > limits.max_buffered {
            if !drop_oldest {
                // Cut rather than end: a stuck client's socket is released at once, and
                // the browser reconnects and resumes from history.
                let waker =
                    st.fail("subscriber fell behind; connection closed so it can resume".into());
                self.wake_after_close(st, waker);
                return Pushed::ClosedFull;
            }
            let mut dropped = 0;
            while st.queued >= self.shared.limits.high_water_mark {
                // The rest of a write made through the sink is half on the wire: kept.
                let oldest = usize::from(st.front_framed);
                match st.chunks.remove(oldest) {
                    Some(old) => {
                        st.queued -= old.len();
                        dropped += 1;
                    }
                    None => break,
                }
            }
            self.push_locked(st, chunk);
            return Pushed::DroppedOldest(dropped);
        }
        self.push_locked(st, chunk);
        Pushed::Queued
    }

    /// Pushes under the lock, releases it, wakes the body. Returns "below the mark".
    fn push_locked(&self, mut st: std::sync::MutexGuard<'_, State>, chunk: Bytes) -> bool {
        st.queued += chunk.len();
        st.chunks.push_back(chunk);
        let below = self.shared.has_room(&st);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        below
    }

    /// Resolves `true` once the queue is below its high-water mark, or `false` once the
    /// stream is closed.
    pub async fn ready(&self) -> bool {
        loop {
            let mut notified = pin!(self.shared.changed().notified());
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.is_closed() {
                    return false;
                }
                if self.shared.has_room(&st) {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Runs `f` once the queue falls below its high-water mark, like [`ready`](Self::ready)
    /// but without a future: for front ends that deliver readiness in batches of their own
    /// (one callback per stream; a later call replaces an armed one). Runs on the thread
    /// that drains the queue, so `f` must be quick.
    pub fn on_ready(&self, f: impl FnOnce() + Send + 'static) -> ReadyState {
        let mut st = self.lock();
        if st.is_closed() {
            return ReadyState::Closed;
        }
        if self.shared.has_room(&st) {
            return ReadyState::Ready;
        }
        st.rare().on_ready = Some(Box::new(f));
        ReadyState::Armed
    }

    /// Resolves once the client has gone or the stream has been ended or aborted.
    pub async fn closed(&self) {
        loop {
            let mut notified = pin!(self.shared.changed().notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `f` once when the body is dropped (client gone, or the response finished).
    /// Runs it at once if that already happened.
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        let mut st = self.lock();
        if st.receiver_gone {
            drop(st);
            f();
        } else if st.on_close.is_none() {
            st.on_close = Some(Box::new(f));
        } else {
            st.rare().on_close.push(Box::new(f));
        }
    }

    /// Ends the stream: what is queued is still delivered, then the response ends.
    pub fn end(&self) {
        let mut st = self.lock();
        if st.is_closed() {
            return;
        }
        st.ended = true;
        let waker = st.rx_waker.take();
        self.wake_after_close(st, waker);
    }

    /// Ends the stream as cut short: what is queued is still delivered, then the body
    /// fails with `reason` instead of ending (the connection is cut without the last
    /// chunk on HTTP/1.1, the stream reset on HTTP/2), so the client sees a truncated
    /// response, not a complete one. Server shutdown does this to byte streams still
    /// open when the grace period ends.
    pub fn end_truncated(&self, reason: impl Into<String>) {
        let mut st = self.lock();
        if st.is_closed() {
            return;
        }
        st.ended = true;
        let rare = st.rare();
        rare.truncated = true;
        rare.error = reason.into();
        let waker = st.rx_waker.take();
        self.wake_after_close(st, waker);
    }

    /// Aborts the stream: queued bytes are discarded and the connection is cut, so the
    /// client sees an incomplete response rather than a clean end.
    pub fn abort(&self, reason: impl Into<String>) {
        let mut st = self.lock();
        if st.receiver_gone || st.failed {
            return;
        }
        let waker = st.fail(reason.into());
        self.wake_after_close(st, waker);
    }

    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.shared.metrics.get()
    }

    /// Counts the bytes this stream sends from now on (see [`sent_bytes`](Self::sent_bytes)).
    pub(crate) fn count_bytes(&self) {
        self.lock().rare().sent.get_or_insert(0);
    }

    /// Payload bytes sent since [`count_bytes`](Self::count_bytes) (without chunk framing).
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.lock().rare.as_ref().and_then(|r| r.sent).unwrap_or(0)
    }

    /// A handle that does not keep the queue alive.
    pub(crate) fn downgrade(&self) -> WeakSender {
        WeakSender(Arc::downgrade(&self.shared))
    }

    /// The queue's address: which queue this is, for as long as it lives.
    pub(crate) fn queue_addr(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Counts `n` SSE events in the server's `events_sent`, or, before the response has
    /// reached a server (events a handler writes before returning), keeps them until
    /// [`QueueReceiver::attach_metrics`] adds them.
    pub(crate) fn count_events(&self, n: u64) {
        if let Some(m) = self.shared.metrics.get() {
            Metrics::add(&m.events_sent, n);
            return;
        }
        let mut st = self.lock();
        // Checked again under the lock, which attach_metrics holds while setting them.
        match self.shared.metrics.get() {
            Some(m) => Metrics::add(&m.events_sent, n),
            None => st.rare().events_before_attach += n,
        }
    }
}

/// A [`StreamSender`] that does not keep its queue alive.
pub(crate) struct WeakSender(std::sync::Weak<Shared>);

impl WeakSender {
    pub(crate) fn upgrade(&self) -> Option<StreamSender> {
        self.0.upgrade().map(|shared| StreamSender { shared })
    }
}

/// The consumer half, polled by [`Body`](crate::Body).
pub(crate) struct QueueReceiver {
    shared: Arc<Shared>,
}

impl QueueReceiver {
    /// A producer handle on this queue (the server keeps one to end streams at shutdown).
    pub(crate) fn sender(&self) -> StreamSender {
        StreamSender {
            shared: self.shared.clone(),
        }
    }

    pub(crate) fn attach_metrics(&self, metrics: &Arc<Metrics>) -> bool {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = self.shared.metrics.set(metrics.clone()).is_ok();
        if let (true, Some(rare)) = (fresh, st.rare.as_mut()) {
            Metrics::add(
                &metrics.events_sent,
                std::mem::take(&mut rare.events_before_attach),
            );
        }
        fresh
    }

    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.shared.metrics.get()
    }

    /// Takes the queued chunks (coalesced into one frame when several are waiting), or
    /// reports the end, an error, or "nothing yet" after registering the waker.
    /// Lets producers write straight to `io` (framed as chunks if `chunked`) whenever
    /// this consumer has nothing queued or unwritten: a write then costs its producer one
    /// syscall and no hand-over. Only for a connection that writes nothing but this body
    /// until it ends, after the response head is out; the sink is dropped with the
    /// receiver, so producers never write past the body's end.
    pub(crate) fn attach_sink(&self, io: &Arc<TcpStream>, chunked: bool) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.is_closed() && st.sink.is_none() {
            st.sink = Some(crate::sys::Sink::new(io.clone()));
            st.sink_chunked = chunked;
        }
    }

    /// The consumer will report its socket's stalls ([`set_stalled`](Self::set_stalled)), so a
    /// broadcast judges this subscriber by them (see [`StreamSender::push_with_policy`]).
    pub(crate) fn report_stalls(&self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.stall == Stall::Unreported {
            st.stall = Stall::Flowing;
        }
    }

    /// The consumer's write would block: the client is not reading. Cleared when the
    /// consumer comes back for more (its bytes were written).
    pub(crate) fn set_stalled(&self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.set_stalled(true);
    }

    /// Asked when a heartbeat is due, right after [`poll_chunk`](Self::poll_chunk) found
    /// nothing to write. [`Heartbeat::Send`]: nothing went through the sink since the last
    /// ask, and the wire is now the consumer's until it polls again (no producer writes
    /// past a half-written comment). [`Heartbeat::Active`]: bytes went through the sink,
    /// so the connection is not idle (a stream written only that way gets a comment at
    /// most every second interval). [`Heartbeat::Busy`]: something was queued meanwhile
    /// (the consumer was woken for it).
    pub(crate) fn claim_heartbeat(&self) -> Heartbeat {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.chunks.is_empty() || st.is_closed() {
            Heartbeat::Busy
        } else if std::mem::take(&mut st.wrote_through) {
            Heartbeat::Active
        } else {
            st.in_flight = true;
            Heartbeat::Send
        }
    }

    /// The next bytes to write, and whether they are already framed for the wire (the
    /// rest of a write made through the sink). Coming back here means the bytes returned
    /// before were written.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Bytes, bool), String>>> {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.in_flight = false;
        st.set_stalled(false);
        if st.failed {
            let err = st
                .rare
                .as_ref()
                .map(|r| r.error.clone())
                .unwrap_or_default();
            return Poll::Ready(Some(Err(err)));
        }
        let Some(first) = st.chunks.pop_front() else {
            if st.ended {
                return Poll::Ready(match st.rare.as_ref() {
                    Some(r) if r.truncated => Some(Err(r.error.clone())),
                    _ => None,
                });
            }
            match &st.rx_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.rx_waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        st.in_flight = true;
        let was_full = !self.shared.has_room(&st);
        let framed = std::mem::take(&mut st.front_framed);
        let mut frame = first;
        if !framed && !st.chunks.is_empty() && frame.len() < MAX_COALESCE {
            // Several events waiting for this client: hand them to hyper as one write.
            let mut buf = BytesMut::with_capacity(st.queued.min(MAX_COALESCE.max(frame.len())));
            buf.extend_from_slice(&frame);
            while let Some(next) = st.chunks.front() {
                if buf.len() + next.len() > MAX_COALESCE {
                    break;
                }
                buf.extend_from_slice(next);
                st.chunks.pop_front();
            }
            frame = buf.freeze();
        }
        st.queued -= frame.len();
        if !framed {
            st.count_sent(frame.len());
        }
        let now_below = self.shared.has_room(&st);
        let on_ready = match &mut st.rare {
            Some(rare) if now_below => rare.on_ready.take(),
            _ => None,
        };
        drop(st);
        if was_full && now_below {
            self.shared.notify_waiters();
        }
        if let Some(f) = on_ready {
            f();
        }
        Poll::Ready(Some(Ok((frame, framed))))
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let callbacks = {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.receiver_gone = true;
            st.sink = None;
            st.chunks = VecDeque::new();
            st.queued = 0;
            st.rx_waker = None;
            let more = st.rare.as_mut().map(|r| {
                r.on_ready = None;
                std::mem::take(&mut r.on_close)
            });
            (st.on_close.take(), more)
        };
        self.shared.notify_waiters();
        let (first, more) = callbacks;
        first
            .into_iter()
            .chain(more.into_iter().flatten())
            .for_each(|f| f());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn poll(rx: &mut QueueReceiver) -> Poll<Option<Result<Bytes, String>>> {
        rx.poll_chunk(&mut Context::from_waker(noop_waker_ref()))
            .map(|c| {
                c.map(|r| {
                    r.map(|(bytes, framed)| {
                        assert!(!framed, "no sink, nothing framed");
                        bytes
                    })
                })
            })
    }

    #[test]
    fn write_reports_the_high_water_mark() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 10,
            max_buffered: 100,
        });
        assert!(tx.write(Bytes::from_static(b"12345")).unwrap());
        assert!(!tx.write(Bytes::from_static(b"67890")).unwrap());
        assert_eq!(tx.buffered(), 10);
        assert!(tx.try_send(Bytes::from_static(b"x")).unwrap_err().is_full());
        // Both chunks come out coalesced into one frame.
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Ok(Bytes::from_static(b"1234567890"))))
        );
        assert_eq!(tx.buffered(), 0);
        assert!(poll(&mut rx).is_pending());
    }

    #[test]
    fn on_ready_answers_at_once_or_runs_once_when_the_queue_drains() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 4,
            max_buffered: 100,
        });
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = |runs: &Arc<std::sync::atomic::AtomicUsize>| {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Ready);
        tx.write(Bytes::from_static(b"aa")).unwrap();
        assert!(!tx.write(Bytes::from_static(b"bbbb")).unwrap());
        assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
        // A second request replaces the first: one notice per wait.
        assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(poll(&mut rx).is_ready());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Drained again later: nothing armed, nothing runs.
        tx.write(Bytes::from_static(b"cccc")).unwrap();
        assert!(poll(&mut rx).is_ready());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Armed, then the client leaves: the callback is dropped, not run.
        tx.write(Bytes::from_static(b"dddd")).unwrap();
        assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
        drop(rx);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Closed);
    }

    #[test]
    fn hard_limit_aborts_instead_of_growing() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 4,
            max_buffered: 8,
        });
        tx.write(Bytes::from_static(b"aaaa")).unwrap();
        tx.write(Bytes::from_static(b"bbbb")).unwrap();
        let err = tx.write(Bytes::from_static(b"c")).unwrap_err();
        assert!(err.is_full());
        assert!(tx.is_closed());
        assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
    }

    #[test]
    fn write_slices_without_a_sink_queues_one_copy_and_keeps_the_limits() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 6,
            max_buffered: 10,
        });
        assert!(tx.write_slices(&[b"ab", b"", b"c"]).unwrap());
        assert!(
            tx.write_slices(&[]).unwrap(),
            "nothing written, still below"
        );
        assert!(!tx.write_slices(&[b"de", b"f"]).unwrap(), "at the mark");
        assert_eq!(tx.buffered(), 6);
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Ok(Bytes::from_static(b"abcdef"))))
        );
        tx.write_slices(&[b"0123456789"]).unwrap();
        // Past the hard limit with something queued: the stream is aborted.
        assert!(tx.write_slices(&[b"x"]).unwrap_err().is_full());
        assert!(tx.write_slices(&[b"y"]).unwrap_err().is_closed());
        assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for len in [0usize, 1, 9, 10, 15, 16, 255, 65_536, 65_546, usize::MAX] {
            assert_eq!(
                chunk_size_line(len, &mut [0; 18]),
                format!("{len:x}\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn frame_into_writes_one_chunk_or_the_raw_bytes() {
        let mut buf = BytesMut::new();
        frame_into(&mut buf, &[b"", b""], true);
        assert!(
            buf.is_empty(),
            "no bytes, no chunk: an empty one would end the body"
        );
        frame_into(&mut buf, &[b"ab", b"cde"], false);
        assert_eq!(&buf[..], b"abcde");
        let big = [7u8; 70_000];
        let mut buf = BytesMut::new();
        frame_into(&mut buf, &[&big[..], b"x"], true);
        assert_eq!(&buf[..7], b"11171\r\n");
        assert_eq!(buf.len(), 7 + 70_001 + 2);
        assert!(buf.ends_with(b"x\r\n"));
        let mut buf = BytesMut::new();
        frame_into(&mut buf, &[b"ab", b"cde"], true);
        assert_eq!(&buf[..], b"5\r\nabcde\r\n");
    }

    #[test]
    fn end_delivers_queued_then_finishes() {
        let (tx, mut rx) = queue(QueueLimits::default());
        tx.write(Bytes::from_static(b"last")).unwrap();
        tx.end();
        assert!(tx
            .write(Bytes::from_static(b"late"))
            .unwrap_err()
            .is_closed());
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Ok(Bytes::from_static(b"last"))))
        );
        assert_eq!(poll(&mut rx), Poll::Ready(None));
    }

    #[test]
    fn dropping_the_body_runs_close_callbacks_and_closes() {
        let (tx, rx) = queue(QueueLimits::default());
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        tx.on_close(move || f.store(true, Ordering::SeqCst));
        drop(rx);
        assert!(flag.load(Ordering::SeqCst));
        assert!(tx.is_disconnected());
        assert!(tx.write(Bytes::from_static(b"x")).unwrap_err().is_closed());
        // Registered after the fact: runs at once.
        let f2 = flag.clone();
        f2.store(false, Ordering::SeqCst);
        tx.on_close(move || f2.store(true, Ordering::SeqCst));
        assert!(flag.load(Ordering::SeqCst));
    }

    #[test]
    fn drop_oldest_policy_keeps_the_queue_bounded() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 6,
            max_buffered: 100,
        });
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"aaa"), true),
            Pushed::Queued
        );
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"bbb"), true),
            Pushed::Queued
        );
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"ccc"), true),
            Pushed::DroppedOldest(1)
        );
        assert_eq!(tx.buffered(), 6);
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Ok(Bytes::from_static(b"bbbccc"))))
        );
    }

    #[test]
    fn close_policy_ends_a_full_subscriber() {
        let (tx, _rx) = queue(QueueLimits {
            high_water_mark: 3,
            max_buffered: 100,
        });
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"aaa"), false),
            Pushed::Queued
        );
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"b"), false),
            Pushed::ClosedFull
        );
        assert_eq!(
            tx.push_with_policy(Bytes::from_static(b"b"), false),
            Pushed::Closed
        );
    }

    #[tokio::test]
    async fn send_waits_for_room_and_ready_sees_close() {
        let (tx, mut rx) = queue(QueueLimits {
            high_water_mark: 4,
            max_buffered: 100,
        });
        tx.write(Bytes::from_static(b"full")).unwrap();
        let tx2 = tx.clone();
        let waiter = tokio::spawn(async move { tx2.send(Bytes::from_static(b"next")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _ = poll(&mut rx);
        waiter.await.unwrap().unwrap();
        assert_eq!(tx.buffered(), 4);
        let tx3 = tx.clone();
        let ready = tokio::spawn(async move { tx3.ready().await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(!ready.await.unwrap());
        tx.closed().await;
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// One `Shared` per stream (an idle SSE subscriber's largest allocation after its task
    /// and socket): rarely used parts are allocated on first use.
    #[test]
    fn a_queue_is_small() {
        let size = std::mem::size_of::<Shared>();
        println!(
            "queue Shared: {size} bytes (State: {})",
            std::mem::size_of::<State>()
        );
        // 160 bytes with Rust 1.95 (216 with the rare parts inline), 16 of them the sink
        // (its handle and its descriptor, see `sys::Sink`); the Arc adds 16. mimalloc (the
        // addon's allocator) serves 168 and 176 bytes from the same 192-byte bin; glibc
        // gives 176 a 192-byte chunk, 16 more than 168 got.
        assert!(size <= 160, "the queue's shared state is {size} bytes");
        let (tx, rx) = queue(QueueLimits::default());
        tx.on_close(|| {});
        assert!(tx.lock().rare.is_none(), "one close callback needs no Rare");
        drop(rx);
    }
}
