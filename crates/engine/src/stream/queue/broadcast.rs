//! What a broadcast channel does with a subscriber's queue: writes that go through to the
//! socket from the channel's fan-out, and the policy for subscribers that fall behind.

use std::sync::Mutex;

use bytes::Bytes;

use super::{Coded, Stall, State, StreamSender};
use crate::compress::{Coding, CrcPart};
use crate::error::{Error, Result};

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

impl StreamSender {
    /// Starts loading this queue's lock and state into the cache: for a channel's sweep,
    /// a few subscribers ahead of the one it is writing to (see [`crate::sys`]).
    #[inline]
    pub(crate) fn prefetch(&self) {
        let state: *const Mutex<State> = &self.shared.state;
        crate::sys::prefetch(state);
        crate::sys::prefetch(state.cast::<u8>().wrapping_add(64));
    }

    /// Makes this a stream of compressed pieces a broadcast shares (see
    /// [`crate::compress::Coding`]): queues the coding's header, and from now on keeps what
    /// its trailer needs (the [`CrcPart`] given with each push) and writes that trailer
    /// when the stream ends. Heartbeats are sent in the coding. Called before anything is
    /// pushed.
    pub(crate) fn set_coding(&self, coding: Coding) {
        let mut st = self.lock();
        if st.is_closed() {
            return;
        }
        st.rare().coded = Some(Coded::new(coding));
        if let Some(header) = coding.header() {
            self.push_locked(st, header);
        }
    }

    /// Queues a chunk ignoring both limits. Only for bounded replays (channel history),
    /// which the client asked for and whose size the channel already caps. `part`: the
    /// chunk's plaintext for a coded stream's trailer (see [`set_coding`](Self::set_coding)).
    pub(crate) fn push_unbounded(&self, chunk: Bytes, part: Option<&CrcPart>) -> Result<()> {
        let mut st = self.lock();
        if st.is_closed() {
            return Err(Error::closed());
        }
        st.tally(part);
        self.push_locked(st, chunk);
        Ok(())
    }

    /// Writes `chunk` for a broadcast subscriber straight to its socket when nothing waits
    /// ahead of it (what the socket does not take is queued, as for [`write`](Self::write)).
    /// `None` when it could not: the caller queues it with
    /// [`push_with_policy`](Self::push_with_policy). The caller counts `chunk` in the
    /// metrics' `bytes_sent` when the answer is `Some(Pushed::Queued)`.
    pub(crate) fn push_through(&self, chunk: &[u8], part: Option<&CrcPart>) -> Option<Pushed> {
        let mut st = self.lock();
        if st.is_closed() {
            return Some(Pushed::Closed);
        }
        let rest = self.write_through(&mut st, &[chunk])?;
        st.tally(part);
        if let Some(rest) = rest {
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
    ///
    /// A gzip-coded stream that loses chunks this way can no longer end with a matching
    /// trailer: it is cut at its end instead (the client reconnects and resumes, as after
    /// any end).
    pub(crate) fn push_with_policy(
        &self,
        chunk: Bytes,
        drop_oldest: bool,
        part: Option<&CrcPart>,
    ) -> Pushed {
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
                // The rest of a write made through the sink is half on the wire, and a
                // coded stream's header starts it: both kept.
                let mut oldest = usize::from(st.front_framed);
                if st.chunks.get(oldest).is_some_and(Coding::is_header) {
                    oldest += 1;
                }
                match st.chunks.remove(oldest) {
                    Some(old) => {
                        st.queued -= old.len();
                        dropped += 1;
                    }
                    None => break,
                }
            }
            if dropped > 0 {
                if let Some(c) = st.rare.as_mut().and_then(|r| r.coded.as_mut()) {
                    c.broken |= c.coding.encoding == crate::compress::Encoding::Gzip;
                }
            }
            st.tally(part);
            self.push_locked(st, chunk);
            return Pushed::DroppedOldest(dropped);
        }
        st.tally(part);
        self.push_locked(st, chunk);
        Pushed::Queued
    }
}
