//! An HTTP/2 stream's send half, shared by the stream's task and its producers.
//!
//! The engine serves HTTP/2 with the `h2` crate, so it holds each stream's
//! [`h2::SendStream`]. A stream body's producers (a channel's sweep, a handler) hand a write
//! to it as a DATA frame themselves when the stream has send capacity, as a [`Sink`] does
//! for a socket: no wake-up of the stream's task. The connection's task encodes and writes
//! the frames of all its streams together. What does not fit the flow-control window is
//! queued for the stream's task, which sends it as capacity comes.
//!
//! [`Sink`]: super::Sink

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use h2::SendStream;

use super::Wrote;

/// Send capacity a write through the sink keeps when the stream has too little: more than
/// one event, so that a stream of small events asks for capacity (and its task is woken by
/// h2's notice that it has some) once per many of them.
const RESERVE: usize = 8 * 1024;

/// Connection capacity a stream's reserve must leave to the others: the reserve is kept
/// only if this much more was granted too, so idle streams' reserves never take the
/// connection's window from streams that need it (a client's default window is 64 KiB for
/// all its streams). Otherwise the stream asks for each write's size alone.
const LEAVE: usize = 16 * 1024;

/// A stream's send half.
pub(crate) struct H2Out {
    send: Mutex<SendStream<Bytes>>,
}

impl H2Out {
    pub(crate) fn new(send: SendStream<Bytes>) -> H2Out {
        H2Out {
            send: Mutex::new(send),
        }
    }

    /// The stream, for its task. Never held while taking its queue's lock (a producer
    /// takes this one under that).
    pub(crate) fn lock(&self) -> MutexGuard<'_, SendStream<Bytes>> {
        self.send.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `data` (`len` bytes in all, not 0) as one DATA frame when the stream has the
    /// send capacity for all of it: [`Wrote::All`]; otherwise [`Wrote::Blocked`] (the
    /// capacity asked for comes to the stream's task, which sends what is queued), or
    /// [`Wrote::Failed`] once the stream is reset or its connection gone.
    pub(crate) fn write(&self, data: &[&[u8]], len: usize) -> Wrote {
        let mut send = self.lock();
        if send.capacity() < len {
            let keep = len.max(RESERVE);
            send.reserve_capacity(keep + LEAVE);
            let spare = send.capacity() >= keep + LEAVE;
            // What is not kept goes back to the connection, for its other streams.
            send.reserve_capacity(if spare { keep } else { len });
            if send.capacity() < len {
                return Wrote::Blocked;
            }
        }
        let mut buf = BytesMut::with_capacity(len);
        data.iter().for_each(|d| buf.extend_from_slice(d));
        match send.send_data(buf.freeze(), false) {
            Ok(()) => Wrote::All,
            Err(_) => Wrote::Failed,
        }
    }
}
