//! One WebSocket's sending side: a bounded queue of outgoing messages that its connection
//! task writes, shared by the handler, the channels it subscribed to and the front end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message as Wire, Utf8Bytes};

use crate::channel::Channel;
use crate::stream::QueueLimits;

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

struct State {
    queue: VecDeque<Wire>,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    phase: Phase,
    /// A send found the queue at or past the high-water mark: a drain is due when it
    /// empties.
    full: bool,
    /// The queue passed its hard limit: the connection is cut.
    cut: bool,
    closed_with: Option<CloseStatus>,
    channels: Vec<Channel>,
}

pub(crate) struct Socket {
    state: Mutex<State>,
    /// Wakes the connection's task: something to write, or the queue passed its hard
    /// limit (while it may be writing).
    wake: AtomicWaker,
    /// Wakes [`WsSender::drained`] and [`WsSender::closed`] waiters.
    drained: Notify,
    limits: QueueLimits,
    remote: Option<SocketAddr>,
    on_drain: Mutex<Option<DrainHook>>,
    id: u64,
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
    Write(VecDeque<Wire>, usize),
    /// The queue passed its hard limit: cut the connection.
    Cut,
}

pub(crate) fn wire_len(m: &Wire) -> usize {
    match m {
        Wire::Text(t) => t.len(),
        Wire::Binary(b) | Wire::Ping(b) | Wire::Pong(b) => b.len(),
        Wire::Close(c) => 2 + c.as_ref().map_or(0, |c| c.reason.len()),
        Wire::Frame(f) => f.len(),
    }
}

impl WsSender {
    pub(crate) fn new(limits: QueueLimits, remote: Option<SocketAddr>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
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
                }),
                wake: AtomicWaker::new(),
                drained: Notify::new(),
                limits,
                remote,
                on_drain: Mutex::new(None),
                id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.socket.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn id(&self) -> u64 {
        self.socket.id
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

    /// Queues a text message whose bytes are shared (a channel's event).
    pub(crate) fn send_shared(&self, text: Utf8Bytes) -> bool {
        self.send_wire(Wire::Text(text))
    }

    fn send_wire(&self, m: Wire) -> bool {
        let mut st = self.lock();
        if st.phase != Phase::Open || st.cut {
            return false;
        }
        st.bytes += wire_len(&m);
        st.queue.push_back(m);
        if st.bytes > self.socket.limits.max_buffered {
            st.cut = true;
            st.queue.clear();
            drop(st);
            self.socket.wake.wake();
            return false;
        }
        let below = st.bytes < self.socket.limits.high_water_mark;
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
        st.queue.push_back(m);
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
        self.lock().closed_with.clone()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.socket.remote
    }

    /// Waits until everything queued is written (or the socket is closed).
    pub async fn drained(&self) {
        loop {
            let wait = self.socket.drained.notified();
            {
                let st = self.lock();
                if st.bytes == 0 || st.phase == Phase::Closed {
                    return;
                }
            }
            wait.await;
        }
    }

    /// Waits until the socket is closed.
    pub async fn closed(&self) {
        loop {
            let wait = self.socket.drained.notified();
            if self.lock().phase == Phase::Closed {
                return;
            }
            wait.await;
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
        channel.unsubscribe_ws(self.id());
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

    /// The connection's task takes everything queued, or learns of a cut; `Pending` (and
    /// woken later) when neither.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Take> {
        self.socket.wake.register(cx.waker());
        let mut st = self.lock();
        if st.cut {
            return Poll::Ready(Take::Cut);
        }
        if st.queue.is_empty() {
            return Poll::Pending;
        }
        let bytes = st.queue.iter().map(wire_len).sum();
        Poll::Ready(Take::Write(std::mem::take(&mut st.queue), bytes))
    }

    /// `Ready` once the queue has passed its hard limit; else the task is woken when it
    /// does.
    pub(crate) fn poll_cut(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.socket.wake.register(cx.waker());
        if self.lock().cut {
            Poll::Ready(())
        } else {
            Poll::Pending
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
        drop(st);
        self.socket.drained.notify_waiters();
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
        let channels = {
            let mut st = self.lock();
            st.phase = Phase::Closed;
            st.queue.clear();
            st.bytes = 0;
            st.closed_with = Some(status);
            std::mem::take(&mut st.channels)
        };
        for c in channels {
            c.unsubscribe_ws(self.id());
        }
        self.socket.drained.notify_waiters();
        self.socket
            .on_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
