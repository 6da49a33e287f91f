//! The producer half of a stream: write bytes, wait for room, learn that the client left.

use std::pin::pin;
use std::sync::Arc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};

use super::{QueueLimits, ReadyState, State, StreamSender, WeakSender, MAX_VECTORED};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::wire::Wrote;

impl StreamSender {
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
    /// to the socket (when the connection lends it to the stream while it has nothing to
    /// write).
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
                let rest = match &st.sink {
                    Some(sink) => sink.frame_after(&rest, &chunks[from..]),
                    None => rest,
                };
                return Ok(self.push_locked(st, rest));
            }
        }
        let later = &chunks[from..];
        let len: usize = later.iter().map(|c| c.len()).sum();
        if len == 0 {
            return Ok(self.shared.has_room(&st));
        }
        let st = self.check_hard_limit(st, len)?;
        // Unframed: the connection frames what it takes from the queue.
        let mut buf = BytesMut::with_capacity(len);
        later.iter().for_each(|c| buf.extend_from_slice(c));
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
    /// metrics after its `send` would cost a cache miss per subscriber (~2% of a sweep's
    /// CPU).
    pub(super) fn write_through(&self, st: &mut State, data: &[&[u8]]) -> Option<Option<Bytes>> {
        debug_assert!(data.len() <= MAX_VECTORED);
        let len: usize = data.iter().map(|d| d.len()).sum();
        if len == 0 || st.in_flight || !st.chunks.is_empty() {
            return None;
        }
        let rest = match st.sink.as_ref()?.write(data, len) {
            Wrote::All => None,
            Wrote::Part(rest) => Some(rest),
            Wrote::Blocked => {
                st.set_stalled(true);
                return None;
            }
            Wrote::Failed => {
                // The consumer's own write meets the error and ends the response.
                st.sink = None;
                return None;
            }
        };
        st.wrote_through = true;
        st.set_stalled(rest.is_some());
        // The payload whole: what the socket did not take follows as the framed front chunk,
        // which the consumer does not count again.
        st.count_sent(len);
        if rest.is_some() {
            // The socket is full: the caller queues the rest, and the producer is told to
            // wait (see `Shared::has_room`).
            st.front_framed = true;
        }
        Some(rest)
    }

    /// After the stream closed under `st` (ended, failed, cut): releases the lock, then
    /// wakes whoever waits for room or for the close, and the body.
    pub(super) fn wake_after_close(
        &self,
        st: std::sync::MutexGuard<'_, State>,
        body: Option<Waker>,
    ) {
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

    /// Pushes under the lock, releases it, wakes the body. Returns "below the mark".
    pub(super) fn push_locked(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        chunk: Bytes,
    ) -> bool {
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
