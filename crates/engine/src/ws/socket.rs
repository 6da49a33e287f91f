//! One WebSocket's sending side: a bounded queue of outgoing messages that its connection
//! task writes, shared by the handler, the channels it subscribed to and the front end.
//!
//! A channel's events come already framed (one text frame's bytes shared by every
//! subscriber, [`Out::Framed`]). When the connection has nothing queued or unwritten and
//! lent its socket ([`WsSender::attach`]), a channel's fan-out writes them straight to the
//! socket ([`WsSender::push_through`]), without waking the connection's task, as an SSE
//! subscriber's sink does; what the socket does not take is queued for the connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as Wire;

use crate::channel::Channel;
use crate::stream::QueueLimits;
use crate::sys::Socket as RawSocket;

/// A close code and reason: how a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseStatus {
    /// The close code (RFC 6455 §7.4; 1005 when the peer gave none, 1006 when the
    /// connection ended without a close frame).
    pub code: u16,
    /// The reason given with it (may be empty).
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// A close frame is queued: later sends are refused.
    Closing,
    /// The connection is over.
    Closed,
}

pub(crate) type DrainHook = Box<dyn Fn() + Send + Sync>;

/// An item of the send queue.
pub(crate) enum Out {
    /// A message, framed by tungstenite when written.
    Msg(Wire),
    /// Whole frames already encoded: `events` of a channel's events (which `DropOldest`
    /// may drop), or with `events` 0 a handler's message; or, with `rest`, what the socket
    /// did not take of a write straight to it, which must go first.
    Framed {
        bytes: Bytes,
        events: u32,
        rest: bool,
    },
}

/// What became of frames a channel pushed ([`WsSender::push_through`], [`WsSender::push_frame`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Written to the socket (all, or the rest queued).
    Through,
    /// Queued for the connection.
    Queued,
    /// Queued after dropping this many older events of channels (`DropOldest`).
    DroppedOldest(u64),
    /// Not queued (`DropOldest`, the queue's bytes all taken by the connection): this many
    /// events dropped, these included.
    Dropped(u64),
    /// The socket was behind and is cut (`Close`).
    ClosedFull,
    /// The socket is closing or closed: nothing queued.
    Closed,
}

/// [`State::quiet`] of a socket that timed out.
const TIMED_OUT: u8 = u8::MAX;

struct State {
    queue: VecDeque<Out>,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    phase: Phase,
    /// A send found the queue at or past the high-water mark: a drain is due when it
    /// empties.
    full: bool,
    /// The queue passed its hard limit: the connection is cut.
    cut: bool,
    /// How the socket ended (boxed: set once, at the end).
    closed_with: Option<Box<CloseStatus>>,
    channels: Vec<Channel>,
    /// The connection's socket, while it lends it (see [`WsSender::attach`]).
    through: Option<RawSocket<()>>,
    /// The connection has nothing taken and unwritten, nor anything in tungstenite's
    /// buffer: a write straight to `through` keeps the order of bytes.
    writer_idle: bool,
    /// The server shuts down: the connection closes with 1001.
    shut_down: bool,
    /// Something was read since the last idle tick ([`WsSender::idle_tick`]).
    heard: bool,
    /// Idle ticks in a row with nothing read; [`TIMED_OUT`] once nothing was read for the
    /// route's idle timeout: the connection closes with 1001.
    quiet: u8,
    /// permessage-deflate with a 15-bit window was negotiated: channels give this socket
    /// their compressed frames.
    deflate: bool,
    /// Wakes [`WsSender::drained`] and [`WsSender::closed`] waiters (made by the first).
    waiters: Option<Arc<Notify>>,
}

impl State {
    /// Why the connection must stop now: its queue passed the hard limit, or the server
    /// shuts down.
    fn stop(&self) -> Option<Take> {
        if self.cut {
            Some(Take::Cut)
        } else if self.shut_down {
            Some(Take::ShutDown)
        } else if self.quiet == TIMED_OUT {
            Some(Take::Idle)
        } else {
            None
        }
    }
}

/// [`QueueLimits`] in the socket's state: 32 bits each (a hard limit past 4 GiB is 4 GiB).
#[derive(Clone, Copy)]
struct Limits {
    high_water_mark: u32,
    max_buffered: u32,
}

impl Limits {
    fn of(q: QueueLimits) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Limits {
            high_water_mark: clamp(q.high_water_mark),
            max_buffered: clamp(q.max_buffered),
        }
    }
}

pub(crate) struct Socket {
    state: Mutex<State>,
    /// Wakes the connection's task: something to write, or the queue passed its hard
    /// limit (while it may be writing).
    wake: AtomicWaker,
    limits: Limits,
    /// Bytes of the messages read and not yet handled (see [`Unhandled`]).
    inbound: AtomicU32,
    remote: Option<SocketAddr>,
    on_drain: Mutex<Option<DrainHook>>,
}

/// The sending side of a WebSocket: cheap to clone, usable from any thread.
///
/// `send_*` queue a message and return `false` once the bytes queued reach the high-water
/// mark (the message is still sent; wait for [`drained`](Self::drained) before sending
/// more). A sender that ignores that and passes the hard limit cuts the connection.
#[derive(Clone)]
pub struct WsSender {
    pub(crate) socket: Arc<Socket>,
}

impl std::fmt::Debug for WsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSender")
            .field("remote", &self.socket.remote)
            .field("buffered", &self.buffered())
            .finish()
    }
}

/// What the connection's writer takes at once.
pub(crate) enum Take {
    /// Messages to write, and their bytes.
    Write(VecDeque<Out>, usize),
    /// The queue passed its hard limit: cut the connection.
    Cut,
    /// The server shuts down: close the connection (1001).
    ShutDown,
    /// Nothing was read for the idle timeout: close the connection (1001).
    Idle,
}

pub(crate) fn wire_len(m: &Wire) -> usize {
    match m {
        Wire::Text(t) => t.len(),
        Wire::Binary(b) | Wire::Ping(b) | Wire::Pong(b) => b.len(),
        Wire::Close(c) => 2 + c.as_ref().map_or(0, |c| c.reason.len()),
        Wire::Frame(f) => f.len(),
    }
}

pub(crate) fn out_len(o: &Out) -> usize {
    match o {
        Out::Msg(m) => wire_len(m),
        Out::Framed { bytes, .. } => bytes.len(),
    }
}

/// Bytes a message handed to a front end counts on top of its length, so that empty
/// messages count too.
const MESSAGE_CHARGE: u32 = 64;

/// Bytes of a socket's messages that may wait for its handler ([`Unhandled`]: a front
/// end's callback holds them, or `WebSocket::recv` has not taken them) before the
/// connection stops reading, which leaves the client to TCP's backpressure. A message is
/// read whatever its size while less than this is held, so one up to `max_payload` still
/// goes through.
pub(crate) const RECEIVE_BACKLOG: u32 = 1 << 20;

/// A message handed to a front end's callback ([`accept_with_callbacks`]), held against
/// its socket's backlog until dropped: drop it once the message is handled. While the
/// messages held reach 1 MiB, the connection reads nothing more, so a client that sends
/// faster than the front end handles is slowed by TCP rather than buffered without bound.
///
/// [`accept_with_callbacks`]: super::accept_with_callbacks
#[must_use = "dropping it at once lets the connection read on as if the message was handled"]
pub struct Unhandled {
    socket: Arc<Socket>,
    bytes: u32,
}

impl std::fmt::Debug for Unhandled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unhandled")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Unhandled {
    fn drop(&mut self) {
        let before = self.socket.inbound.fetch_sub(self.bytes, Ordering::AcqRel);
        if before >= RECEIVE_BACKLOG && before - self.bytes < RECEIVE_BACKLOG {
            self.socket.wake.wake();
        }
    }
}

impl WsSender {
    pub(crate) fn new(limits: QueueLimits, remote: Option<SocketAddr>, deflate: bool) -> Self {
        WsSender {
            socket: Arc::new(Socket {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    bytes: 0,
                    phase: Phase::Open,
                    full: false,
                    cut: false,
                    closed_with: None,
                    channels: Vec::new(),
                    through: None,
                    writer_idle: false,
                    shut_down: false,
                    heard: true,
                    quiet: 0,
                    deflate,
                    waiters: None,
                }),
                wake: AtomicWaker::new(),
                limits: Limits::of(limits),
                inbound: AtomicU32::new(0),
                remote,
                on_drain: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.socket.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a message of `len` bytes against the socket's backlog until the returned
    /// guard is dropped.
    pub(crate) fn hold(&self, len: usize) -> Unhandled {
        // A message of 2 GiB or more counts as 2 GiB: the sum stays within 32 bits.
        let bytes = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(u32::MAX / 2)
            .saturating_add(MESSAGE_CHARGE);
        self.socket.inbound.fetch_add(bytes, Ordering::AcqRel);
        Unhandled {
            socket: self.socket.clone(),
            bytes,
        }
    }

    /// Bytes of the socket's messages held ([`Unhandled`]).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> u32 {
        self.socket.inbound.load(Ordering::Acquire)
    }

    /// The socket's messages not yet handled reach [`RECEIVE_BACKLOG`] bytes: the
    /// connection's task is woken once they fall below it.
    pub(crate) fn backlogged(&self, cx: &mut Context<'_>) -> bool {
        if self.socket.inbound.load(Ordering::Acquire) < RECEIVE_BACKLOG {
            return false;
        }
        self.socket.wake.register(cx.waker());
        self.socket.inbound.load(Ordering::Acquire) >= RECEIVE_BACKLOG
    }

    /// Both send on the same socket.
    pub(crate) fn same(&self, other: &WsSender) -> bool {
        Arc::ptr_eq(&self.socket, &other.socket)
    }

    /// Channels give this socket their frames compressed (see `deflate.rs`).
    pub(crate) fn deflates(&self) -> bool {
        self.lock().deflate
    }

    /// Queues a text message. See the type's doc for the return value.
    pub fn send_text(&self, text: impl Into<String>) -> bool {
        self.send_wire(Wire::Text(text.into().into()))
    }

    /// Queues a binary message.
    pub fn send_binary(&self, data: impl Into<Bytes>) -> bool {
        self.send_wire(Wire::Binary(data.into()))
    }

    /// Queues a message.
    pub fn send(&self, message: super::Message) -> bool {
        match message {
            super::Message::Text(t) => self.send_text(t),
            super::Message::Binary(b) => self.send_binary(b),
        }
    }

    fn send_wire(&self, m: Wire) -> bool {
        let mut st = self.lock();
        if st.phase != Phase::Open || st.cut {
            return false;
        }
        st.bytes += wire_len(&m);
        st.queue.push_back(Out::Msg(m));
        if st.bytes > self.socket.limits.max_buffered as usize {
            st.cut = true;
            st.queue.clear();
            drop(st);
            self.socket.wake.wake();
            return false;
        }
        let below = st.bytes < self.socket.limits.high_water_mark as usize;
        if !below {
            st.full = true;
        }
        let first = st.queue.len() == 1;
        drop(st);
        if first {
            self.socket.wake.wake();
        }
        below
    }

    /// Starts the close handshake with `code` and `reason` (at most 123 bytes; longer is
    /// cut at a character boundary) after the messages already queued. Later sends are
    /// refused.
    pub fn close(&self, code: u16, reason: &str) {
        let mut reason = reason;
        while reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let mut st = self.lock();
        if st.phase != Phase::Open {
            return;
        }
        st.phase = Phase::Closing;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        let m = Wire::Close(Some(frame));
        st.bytes += wire_len(&m);
        st.queue.push_back(Out::Msg(m));
        drop(st);
        self.socket.wake.wake();
    }

    /// Closes normally (1000) after the messages already queued.
    pub fn end(&self) {
        self.close(1000, "");
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered(&self) -> usize {
        self.lock().bytes
    }

    /// True once the socket is closing or closed (sends are refused).
    pub fn is_closed(&self) -> bool {
        let st = self.lock();
        st.phase != Phase::Open || st.cut
    }

    /// How the socket ended, once it has.
    pub fn close_status(&self) -> Option<CloseStatus> {
        self.lock().closed_with.as_deref().cloned()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.socket.remote
    }

    /// Waits until everything queued is written (or the socket is closed).
    pub async fn drained(&self) {
        self.wait_until(|st| st.bytes == 0 || st.phase == Phase::Closed)
            .await;
    }

    /// Waits until the socket is closed.
    pub async fn closed(&self) {
        self.wait_until(|st| st.phase == Phase::Closed).await;
    }

    async fn wait_until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let notify = {
                let mut st = self.lock();
                if done(&st) {
                    return;
                }
                st.waiters.get_or_insert_with(Default::default).clone()
            };
            // Woken by any `notify_waiters` from here on, before it is first polled.
            let wait = notify.notified();
            if done(&self.lock()) {
                return;
            }
            wait.await;
        }
    }

    /// Wakes the waiters of `drained` and `closed`, if any.
    fn notify_waiters(waiters: Option<Arc<Notify>>) {
        if let Some(n) = waiters {
            n.notify_waiters();
        }
    }

    /// Delivers `channel`'s events to this socket as text frames (each event's data),
    /// until [`unsubscribe`](Self::unsubscribe) or the socket closes. Subscribing twice
    /// is subscribing once.
    pub fn subscribe(&self, channel: &Channel) {
        {
            let mut st = self.lock();
            if st.phase == Phase::Closed || st.channels.iter().any(|c| c.same(channel)) {
                return;
            }
            st.channels.push(channel.clone());
        }
        channel.subscribe_ws(self);
    }

    /// Stops delivering `channel`'s events.
    pub fn unsubscribe(&self, channel: &Channel) {
        self.lock().channels.retain(|c| !c.same(channel));
        channel.unsubscribe_ws(self);
    }

    /// Sets the function run each time the queue empties after a send returned `false`
    /// (replacing the one set before).
    pub fn on_drain(&self, hook: impl Fn() + Send + Sync + 'static) {
        let hook: DrainHook = Box::new(hook);
        *self
            .socket
            .on_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The connection's task takes everything queued, or learns of a cut or of the
    /// shutdown; `Pending` (and woken later) when none.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Take> {
        self.socket.wake.register(cx.waker());
        let mut st = self.lock();
        if let Some(stop) = st.stop() {
            return Poll::Ready(stop);
        }
        if st.queue.is_empty() {
            return Poll::Pending;
        }
        let bytes = st.queue.iter().map(out_len).sum();
        Poll::Ready(Take::Write(std::mem::take(&mut st.queue), bytes))
    }

    /// `Ready` once the queue has passed its hard limit (`Take::Cut`), the server shuts
    /// down (`Take::ShutDown`) or the idle timeout passed (`Take::Idle`); else the task is
    /// woken when one of them happens.
    pub(crate) fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<Take> {
        self.socket.wake.register(cx.waker());
        match self.lock().stop() {
            Some(stop) => Poll::Ready(stop),
            None => Poll::Pending,
        }
    }

    /// The writer wrote `bytes` taken before.
    pub(crate) fn written(&self, bytes: usize) {
        let mut st = self.lock();
        st.bytes = st.bytes.saturating_sub(bytes);
        if st.bytes > 0 {
            return;
        }
        let drain = std::mem::take(&mut st.full) && st.phase == Phase::Open;
        let waiters = st.waiters.clone();
        drop(st);
        Self::notify_waiters(waiters);
        if drain {
            if let Some(hook) = &*self
                .socket
                .on_drain
                .lock()
                .unwrap_or_else(|p| p.into_inner())
            {
                hook();
            }
        }
    }

    /// The connection is over: refuses sends from now on, leaves its channels and records
    /// how it ended.
    pub(crate) fn finish(&self, status: CloseStatus) {
        let (channels, waiters) = {
            let mut st = self.lock();
            st.phase = Phase::Closed;
            st.queue.clear();
            st.bytes = 0;
            st.closed_with = Some(Box::new(status));
            st.through = None;
            st.writer_idle = false;
            (std::mem::take(&mut st.channels), st.waiters.take())
        };
        for c in channels {
            c.unsubscribe_ws(self);
        }
        Self::notify_waiters(waiters);
        self.socket
            .on_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The server shuts down: the connection closes with 1001.
    pub(crate) fn shut_down(&self) {
        self.lock().shut_down = true;
        self.socket.wake.wake();
    }

    /// The connection read something (for [`idle_tick`](Self::idle_tick)).
    pub(crate) fn heard(&self) {
        self.lock().heard = true;
    }

    /// One tick of the idle clock: after `ticks` ticks in a row with nothing read, the
    /// connection closes (1001). A socket read from since the last tick starts again.
    pub(crate) fn idle_tick(&self, ticks: u8) {
        let mut st = self.lock();
        if st.quiet == TIMED_OUT {
            return;
        }
        if std::mem::take(&mut st.heard) {
            st.quiet = 0;
            return;
        }
        st.quiet += 1;
        if st.quiet >= ticks && st.phase != Phase::Closed {
            st.quiet = TIMED_OUT;
            drop(st);
            self.socket.wake.wake();
        }
    }

    pub(crate) fn downgrade(&self) -> super::WeakWs {
        Arc::downgrade(&self.socket)
    }

    /// Queues the 101 response's head before anything else (the direct path's upgrade).
    pub(crate) fn push_head(&self, head: Bytes) {
        let mut st = self.lock();
        st.bytes += head.len();
        st.queue.push_front(Out::Framed {
            bytes: head,
            events: 0,
            rest: false,
        });
    }

    /// Lends the connection's socket to channels' fan-outs (see the module doc).
    pub(crate) fn attach(&self, io: std::sync::Arc<crate::wire::Conn>) {
        let mut st = self.lock();
        if st.phase != Phase::Closed {
            st.through = Some(RawSocket::new(io, ()));
        }
    }

    /// Takes the socket back: nothing is written to it from elsewhere from now on.
    pub(crate) fn detach(&self) {
        let mut st = self.lock();
        st.through = None;
        st.writer_idle = false;
    }

    /// The queue starts with the rest of a frame written in part.
    pub(crate) fn has_rest(&self) -> bool {
        matches!(
            self.lock().queue.front(),
            Some(Out::Framed { rest: true, .. })
        )
    }

    /// The connection is about to write (or read, which may write a pong): no write
    /// straight to the socket until [`idle`](Self::idle).
    pub(crate) fn busy(&self) {
        self.lock().writer_idle = false;
    }

    /// The connection wrote everything it took and tungstenite holds nothing: writes may go
    /// straight to the socket while the queue stays empty. False (and nothing changed)
    /// when something was queued meanwhile.
    pub(crate) fn idle(&self) -> bool {
        let mut st = self.lock();
        if !st.queue.is_empty() || st.cut {
            return false;
        }
        st.writer_idle = st.through.is_some();
        true
    }

    /// Brings the lock and state a sweep is about to take into the cache.
    pub(crate) fn prefetch(&self) {
        let state: *const Mutex<State> = &self.socket.state;
        crate::sys::prefetch(state);
        crate::sys::prefetch(state.cast::<u8>().wrapping_add(64));
    }

    /// Writes a channel's frames, `joined[from..]`, straight to the socket when nothing
    /// waits (see the module doc); the rest of a partial write is queued. `None` when they
    /// must be queued ([`push_frame`](Self::push_frame)).
    pub(crate) fn push_through(&self, joined: &Bytes, from: usize) -> Option<Pushed> {
        let bytes = &joined[from..];
        let mut st = self.lock();
        if st.phase != Phase::Open || st.cut {
            return Some(Pushed::Closed);
        }
        if !st.writer_idle || !st.queue.is_empty() {
            return None;
        }
        let sock = st.through.as_ref()?;
        match sock.sock_ref().send(bytes) {
            Ok(n) if n == bytes.len() => Some(Pushed::Through),
            Ok(n) if n > 0 => {
                let rest = joined.slice(from + n..);
                st.bytes += rest.len();
                st.queue.push_back(Out::Framed {
                    bytes: rest,
                    events: 0,
                    rest: true,
                });
                st.writer_idle = false;
                drop(st);
                self.socket.wake.wake();
                Some(Pushed::Through)
            }
            // Full, or failed (the connection meets the error): queued.
            _ => {
                st.writer_idle = false;
                None
            }
        }
    }

    /// Queues a channel's frame of `events` events. A socket whose queue holds the
    /// high-water mark or more is behind: `drop_oldest` drops the oldest queued channel
    /// frames to make room (this one, when the connection took all there was), else the
    /// socket is cut (it ends with 1006). Past the hard limit it is cut either way.
    pub(crate) fn push_frame(&self, bytes: &Bytes, events: u32, drop_oldest: bool) -> Pushed {
        let limits = self.socket.limits;
        let mut st = self.lock();
        if st.phase != Phase::Open || st.cut {
            return Pushed::Closed;
        }
        let mut dropped = 0;
        let (high_water_mark, max_buffered) = (
            limits.high_water_mark as usize,
            limits.max_buffered as usize,
        );
        if st.bytes >= high_water_mark {
            if !drop_oldest {
                st.cut = true;
                st.queue.clear();
                drop(st);
                self.socket.wake.wake();
                return Pushed::ClosedFull;
            }
            let mut i = 0;
            while st.bytes + bytes.len() > high_water_mark && i < st.queue.len() {
                match &st.queue[i] {
                    Out::Framed {
                        bytes: b,
                        events,
                        rest: false,
                    } if *events > 0 => {
                        let (len, n) = (b.len(), *events);
                        st.queue.remove(i);
                        st.bytes -= len;
                        dropped += u64::from(n);
                    }
                    _ => i += 1,
                }
            }
            if st.bytes + bytes.len() > high_water_mark {
                // What is left was taken by the connection: these events are dropped too.
                return Pushed::Dropped(dropped + u64::from(events));
            }
        }
        if st.bytes + bytes.len() > max_buffered {
            st.cut = true;
            st.queue.clear();
            drop(st);
            self.socket.wake.wake();
            return Pushed::ClosedFull;
        }
        st.bytes += bytes.len();
        st.queue.push_back(Out::Framed {
            bytes: bytes.clone(),
            events,
            rest: false,
        });
        let first = st.queue.len() == 1;
        drop(st);
        if first {
            self.socket.wake.wake();
        }
        if dropped > 0 {
            Pushed::DroppedOldest(dropped)
        } else {
            Pushed::Queued
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_socket_fits_224_bytes() {
        // With Arc's two counts: one 224-byte block per socket.
        let size = std::mem::size_of::<super::Socket>() + 2 * std::mem::size_of::<usize>();
        println!("ws Socket with Arc's counts: {size} bytes");
        assert!(size <= 224, "a ws Socket takes {size} bytes");
    }
}
