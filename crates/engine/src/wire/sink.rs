//! A connection's socket lent to a stream's producers.
//!
//! On the direct HTTP/1.1 path, once a streaming response's head is out, the connection
//! attaches its socket to the stream's queue. A producer's write that finds the queue empty
//! and nothing in flight then goes straight to the socket from the producer's thread (no
//! copy, no hand-over to the connection's task, no wake-up), as `write` does on a Node or
//! Bun socket; what the socket does not take is queued, already framed, for the connection
//! to write. The queue decides when a write may go through (the order of bytes); the sink
//! frames it and writes it.
//!
//! Over TLS the sink frames the write, has the connection's session seal it and sends the
//! records the same way. What the socket does not take stays sealed in the session, which
//! the connection writes out before anything else.

use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::chunk;
use super::h2::H2Out;
use super::tls::Session;
use super::Conn;
use super::Framing;
use crate::sys::Socket;

/// Frames up to this size are copied into one buffer and sent with one `send`.
const SMALL_FRAME: usize = 1024;

/// The most buffers one write through a sink takes (one vectored `send`).
pub const MAX_VECTORED: usize = 64;

/// Where a stream's producers write: a socket that takes the payload framed for its
/// response, or an HTTP/2 stream that takes it as a DATA frame.
pub(crate) enum Sink {
    Socket(SocketSink),
    H2(Arc<H2Out>),
}

/// A socket that takes a stream's payload framed for its response.
pub(crate) struct SocketSink {
    /// Tagged with the framing its bytes get (chunks, or as they are), and whether they
    /// are sealed by a TLS session.
    socket: Socket<Tag>,
}

#[derive(Clone, Copy)]
pub(crate) struct Tag {
    framing: Framing,
    tls: bool,
}

/// What became of a write through a [`Sink`].
#[derive(Debug)]
pub(crate) enum Wrote {
    /// All of it went out.
    All,
    /// The socket took part of it; this is the rest, framed, to be written first by the
    /// connection once the socket has room.
    Part(Bytes),
    /// The socket is full: nothing went out.
    Blocked,
    /// The socket failed (the connection's own write meets the error): nothing went out,
    /// and the sink should not be used again.
    Failed,
}

impl Sink {
    /// `io`'s socket, taking bytes framed for `framing` (chunks, or as they are for a
    /// close-delimited body).
    pub(crate) fn new(io: Arc<Conn>, framing: Framing) -> Sink {
        let tls = io.is_tls();
        Sink::Socket(SocketSink {
            socket: Socket::new(io, Tag { framing, tls }),
        })
    }

    /// Writes `data` (at most [`MAX_VECTORED`] buffers, `len` bytes in all, not 0) as one
    /// frame: see [`SocketSink::write`] and [`H2Out::write`] (which never answers
    /// [`Wrote::Part`]).
    pub(crate) fn write(&self, data: &[&[u8]], len: usize) -> Wrote {
        match self {
            Sink::Socket(s) => s.write(data, len),
            Sink::H2(out) => out.write(data, len),
        }
    }

    /// `framed` (the rest of a write, see [`Wrote::Part`]) followed by `more` framed as one
    /// frame: what the connection writes once the socket has room.
    pub(crate) fn frame_after(&self, framed: &[u8], more: &[&[u8]]) -> Bytes {
        let mut buf = BytesMut::from(framed);
        let framing = match self {
            Sink::Socket(s) => s.framing(),
            Sink::H2(_) => Framing::Close,
        };
        chunk::frame_into(&mut buf, more, framing);
        buf.freeze()
    }
}

impl SocketSink {
    fn framing(&self) -> Framing {
        self.socket.tag.framing
    }

    /// Writes `data` (at most [`MAX_VECTORED`] buffers, `len` bytes in all, not 0) as one
    /// frame with a plain non-blocking `send`, bypassing tokio's readiness bookkeeping:
    /// reading it is a cache miss per socket when a channel writes to thousands in turn (~5%
    /// of a sweep). A stale "writable" left behind only costs the connection's own next
    /// write one `EAGAIN`.
    fn write(&self, data: &[&[u8]], len: usize) -> Wrote {
        debug_assert!(data.len() <= MAX_VECTORED && len > 0);
        if self.socket.tag.tls {
            let sealed = self.socket.conn().with_session(|s| self.seal(s, data, len));
            return sealed.unwrap_or(Wrote::Failed);
        }
        let (size, tail) = chunk::around(self.framing(), len);
        let head = size.as_bytes();
        let total = head.len() + len + tail.len();
        let parts = || {
            std::iter::once(head)
                .chain(data.iter().copied())
                .chain([tail])
        };
        let socket = self.socket.sock_ref();
        let res = if total <= SMALL_FRAME {
            // An event: one buffer and one `send`, cheaper in the kernel than `sendmsg`.
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
            Ok(0) => return Wrote::Blocked,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Wrote::Blocked,
            Err(_) => return Wrote::Failed,
        };
        if written == total {
            return Wrote::All;
        }
        Wrote::Part(after(parts(), written, total))
    }

    /// [`write`](Self::write) over TLS: `data` framed, sealed by `session` and sent. What
    /// the socket does not take stays in the session (the connection writes it out
    /// first): [`Wrote::Part`] then, with the framed plaintext the session did not seal
    /// (usually none). Blocked while the session holds bytes the socket did not take.
    fn seal(&self, session: &mut Session, data: &[&[u8]], len: usize) -> Wrote {
        if session.has_unsent() {
            return Wrote::Blocked;
        }
        let (size, tail) = chunk::around(self.framing(), len);
        let head = size.as_bytes();
        let parts = || {
            std::iter::once(head)
                .chain(data.iter().copied())
                .chain([tail])
                .filter(|p| !p.is_empty())
        };
        let mut slices = [IoSlice::new(&[]); MAX_VECTORED + 2];
        let mut n = 0;
        for p in parts() {
            slices[n] = IoSlice::new(p);
            n += 1;
        }
        let total = head.len() + len + tail.len();
        let socket = self.socket.sock_ref();
        let Ok(taken) = session.seal(&slices[..n], |b| socket.send(b)) else {
            return Wrote::Failed;
        };
        if taken == total && !session.has_unsent() {
            return Wrote::All;
        }
        Wrote::Part(after(parts(), taken, total))
    }
}

/// What of `parts` (`total` bytes in all) follows its first `done` bytes, in one buffer.
fn after<'a>(parts: impl Iterator<Item = &'a [u8]>, done: usize, total: usize) -> Bytes {
    let mut rest = BytesMut::with_capacity(total - done);
    let mut skip = done;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        rest.extend_from_slice(&p[skip..]);
        skip = 0;
    }
    rest.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Arc<Conn>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Arc::new(Conn::plain(accepted.unwrap().0)), client.unwrap())
    }

    #[tokio::test]
    async fn a_write_goes_out_as_one_chunk_or_as_it_is() {
        let (server, mut client) = pair().await;
        let chunked = Sink::new(server.clone(), Framing::Chunked);
        assert!(matches!(chunked.write(&[b"hel", b"lo"], 5), Wrote::All));
        let close = Sink::new(server, Framing::Close);
        assert!(matches!(close.write(&[b"raw"], 3), Wrote::All));
        let mut got = vec![0; 13];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"5\r\nhello\r\nraw");
    }

    #[tokio::test]
    async fn a_full_socket_leaves_the_framed_rest_and_then_blocks() {
        let (server, mut client) = pair().await;
        let sink = Sink::new(server, Framing::Chunked);
        let big = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        let rest = loop {
            match sink.write(&[&big], big.len()) {
                Wrote::All => sent += 1,
                Wrote::Part(rest) => break rest,
                other => panic!("{other:?} before the socket filled"),
            }
            assert!(sent < 64, "a loopback socket took 64 MiB unread");
        };
        assert!(matches!(sink.write(&[b"y"], 1), Wrote::Blocked));
        assert!(rest.ends_with(b"x\r\n") && rest.len() < big.len() + 10);
        let after = sink.frame_after(&rest, &[b"ab", b"c"]);
        assert_eq!(&after[..rest.len()], &rest[..]);
        assert_eq!(&after[rest.len()..], b"3\r\nabc\r\n");
        // What went out and the rest make whole chunks.
        let whole = (sent + 1) * (big.len() + 10);
        let mut wire = vec![0; whole - rest.len()];
        client.read_exact(&mut wire).await.unwrap();
        wire.extend_from_slice(&rest);
        let mut at = 0;
        for _ in 0..=sent {
            assert_eq!(&wire[at..at + 8], b"100000\r\n");
            at += 8;
            assert!(wire[at..at + big.len()].iter().all(|b| *b == b'x'));
            at += big.len();
            assert_eq!(&wire[at..at + 2], b"\r\n");
            at += 2;
        }
        assert_eq!(at, wire.len());
    }
}
