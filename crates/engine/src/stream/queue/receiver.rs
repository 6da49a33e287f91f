//! The consumer half of a stream's queue, polled by its [`Body`](crate::Body).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::{Heartbeat, Shared, Stall, State, StreamSender};
use crate::compress::CrcPart;
use crate::metrics::Metrics;
use crate::stream::HEARTBEAT;
use crate::wire::{Chunk, Framing, Sink};

/// The largest frame the body hands to hyper when it coalesces queued chunks.
const MAX_COALESCE: usize = 64 * 1024;

/// The consumer half, polled by [`Body`](crate::Body).
pub(crate) struct QueueReceiver {
    pub(super) shared: Arc<Shared>,
}

impl QueueReceiver {
    /// A producer handle on this queue (the server keeps one to end streams at shutdown).
    pub(crate) fn sender(&self) -> StreamSender {
        StreamSender {
            shared: self.shared.clone(),
        }
    }

    pub(crate) fn attach_metrics(&self, metrics: &Arc<Metrics>) -> bool {
        let mut st = self.shared.lock();
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
    pub(crate) fn attach_sink(&self, io: &Arc<crate::wire::Conn>, framing: Framing) {
        let mut st = self.shared.lock();
        if !st.is_closed() && st.sink.is_none() {
            st.sink = Some(Sink::new(io.clone(), framing));
        }
    }

    /// Lets producers send straight to an HTTP/2 stream (see [`crate::wire::h2`]) whenever
    /// this consumer has nothing queued or unwritten, as [`attach_sink`](Self::attach_sink)
    /// does for a socket.
    pub(crate) fn attach_h2(&self, out: &Arc<crate::wire::h2::H2Out>) {
        let mut st = self.shared.lock();
        if !st.is_closed() && st.sink.is_none() {
            st.sink = Some(Sink::H2(out.clone()));
        }
    }

    /// True once the producer failed the stream (aborted it, or a broadcast's policy closed
    /// it). Otherwise the consumer is woken when that happens (and by any push meanwhile):
    /// for a consumer that holds a chunk it cannot write yet.
    pub(crate) fn poll_failed(&self, cx: &mut Context<'_>) -> bool {
        let mut st = self.shared.lock();
        if st.failed {
            return true;
        }
        match &st.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.rx_waker = Some(cx.waker().clone()),
        }
        false
    }

    /// The consumer will report its socket's stalls ([`set_stalled`](Self::set_stalled)), so a
    /// broadcast judges this subscriber by them (see [`StreamSender::push_with_policy`]).
    pub(crate) fn report_stalls(&self) {
        let mut st = self.shared.lock();
        if st.stall == Stall::Unreported {
            st.stall = Stall::Flowing;
        }
    }

    /// The consumer's write would block: the client is not reading. Cleared when the
    /// consumer comes back for more (its bytes were written).
    pub(crate) fn set_stalled(&self) {
        let mut st = self.shared.lock();
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
        let mut st = self.shared.lock();
        if !st.chunks.is_empty() || st.is_closed() {
            Heartbeat::Busy
        } else if std::mem::take(&mut st.wrote_through) {
            Heartbeat::Active
        } else {
            st.in_flight = true;
            match st.rare.as_mut().and_then(|r| r.coded.as_mut()) {
                Some(c) => {
                    c.tally.add(heartbeat_part());
                    Heartbeat::Send(c.coding.heartbeat())
                }
                None => Heartbeat::Send(Bytes::from_static(HEARTBEAT)),
            }
        }
    }

    /// The next bytes to write ([`Chunk::Framed`]: the rest of a write made through the
    /// sink). Coming back here means the bytes returned before were written.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Chunk, String>>> {
        let mut st = self.shared.lock();
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
                return Poll::Ready(self.end(&mut st));
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
        Poll::Ready(Some(Ok(if framed {
            Chunk::Framed(frame)
        } else {
            Chunk::Data(frame)
        })))
    }
}

impl QueueReceiver {
    /// What an ended stream yields once its queue is empty: its coding's end (the gzip
    /// trailer) first, if it has one, then the end, or the error that cuts it.
    fn end(&self, st: &mut State) -> Option<Result<Chunk, String>> {
        let rare = st.rare.as_deref_mut()?;
        if rare.truncated {
            return Some(Err(rare.error.clone()));
        }
        let coded = rare.coded.as_mut().filter(|c| !c.finished)?;
        coded.finished = true;
        if coded.broken {
            return Some(Err(
                "pieces of this compressed stream were dropped (the client fell behind); cut so that it resumes"
                    .into(),
            ));
        }
        let end = coded.coding.trailer(&coded.tally)?;
        st.in_flight = true;
        st.count_sent(end.len());
        Some(Ok(Chunk::Data(end)))
    }
}

/// The heartbeat comment's part of a gzip trailer.
fn heartbeat_part() -> &'static CrcPart {
    static PART: std::sync::OnceLock<CrcPart> = std::sync::OnceLock::new();
    PART.get_or_init(|| CrcPart::of(HEARTBEAT))
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let callbacks = {
            let mut st = self.shared.lock();
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
