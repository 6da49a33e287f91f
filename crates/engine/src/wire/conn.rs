//! A connection's transport on the direct HTTP/1.1 path: a TCP socket, or a TLS session
//! over one (ALPN `http/1.1`, or none).
//!
//! Reads append what arrived to a caller's buffer, so that an idle connection keeps no
//! read buffer of its own (nor does its TLS session: see [`super::tls`]). Writes take
//! vectors of plaintext; over TLS each write is sealed and sent at once.

use std::io::{self, IoSlice};
#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::tls::{Session, TlsIo};

/// Writes up to this size are copied into one buffer and sent with one `write`: cheaper in
/// the kernel than a `writev` of several (an event is a size line, the data and a CRLF).
const SMALL_WRITE: usize = 4096;

thread_local! {
    /// The buffer small writes are copied into (per runtime thread, reused).
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SMALL_WRITE));
}

/// A connection served on the direct path, shared by its task and the producers of a
/// streaming response that write through its [`Sink`](super::Sink).
pub(crate) struct Conn {
    io: Io,
}

enum Io {
    Plain(TcpStream),
    /// The session behind a lock: the connection's task and a sink's writers both use it.
    Tls {
        tcp: TcpStream,
        session: Box<Mutex<Session>>,
    },
}

/// What a connection is once its task no longer serves it directly.
pub(crate) enum Unwrapped {
    Plain(TcpStream),
    Tls(TlsIo),
}

impl Conn {
    /// A plain TCP connection.
    pub(crate) fn plain(tcp: TcpStream) -> Conn {
        Conn { io: Io::Plain(tcp) }
    }

    /// A TLS connection whose handshake is done.
    pub(crate) fn tls(tcp: TcpStream, session: Box<Session>) -> Conn {
        Conn {
            io: Io::Tls {
                tcp,
                session: Box::new(Mutex::new(*session)),
            },
        }
    }

    /// The socket of a plain connection.
    pub(crate) fn plain_tcp(&self) -> Option<&TcpStream> {
        match &self.io {
            Io::Plain(tcp) => Some(tcp),
            Io::Tls { .. } => None,
        }
    }

    /// True over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls { .. })
    }

    /// Runs `f` on the TLS session, under its lock (`None` on a plain connection).
    pub(crate) fn with_session<R>(&self, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        match &self.io {
            Io::Plain(_) => None,
            Io::Tls { session, .. } => Some(f(&mut Self::lock(session))),
        }
    }

    fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
        session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the transport back, for hyper or for closing.
    pub(crate) fn into_inner(self) -> Unwrapped {
        match self.io {
            Io::Plain(tcp) => Unwrapped::Plain(tcp),
            Io::Tls { tcp, session } => Unwrapped::Tls(TlsIo::new(
                tcp,
                Box::new(session.into_inner().unwrap_or_else(|p| p.into_inner())),
            )),
        }
    }

    /// Closes the connection (a TLS one with its `close_notify` first).
    pub(crate) async fn shutdown(self) {
        let _ = match self.into_inner() {
            Unwrapped::Plain(mut tcp) => tcp.shutdown().await,
            Unwrapped::Tls(mut tls) => tls.session.close(&mut tls.tcp).await,
        };
    }

    /// Waits for bytes and appends them to `buf`: `Ok(0)` at the end of the stream. A plain
    /// connection calls `grow` only once bytes wait in the socket, then reads into `buf`'s
    /// spare capacity, so that a connection waiting for a request holds no buffer.
    pub(crate) async fn read(
        &self,
        buf: &mut Vec<u8>,
        grow: impl Fn(&mut Vec<u8>),
    ) -> io::Result<usize> {
        match &self.io {
            Io::Plain(tcp) => loop {
                tcp.readable().await?;
                grow(buf);
                match read_some(tcp, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Io::Tls { tcp, session } => {
                std::future::poll_fn(|cx| poll_read_tls(tcp, session, cx, buf)).await
            }
        }
    }

    /// Appends to `buf` what arrived (plaintext over TLS): `Ok(0)` at the end of the
    /// stream. A plain connection reads into `buf`'s spare room as [`read_some`] does.
    pub(crate) fn poll_read_buf(
        &self,
        cx: &mut Context<'_>,
        buf: &mut impl BufMut,
    ) -> Poll<io::Result<usize>> {
        match &self.io {
            Io::Plain(tcp) => loop {
                std::task::ready!(tcp.poll_read_ready(cx))?;
                match read_some(tcp, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Io::Tls { tcp, session } => poll_read_tls(tcp, session, cx, buf),
        }
    }

    /// The connection's TCP stream (under the TLS session, if any).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(tcp) | Io::Tls { tcp, .. } => tcp,
        }
    }

    /// Appends to `buf` what arrived, up to about `max` bytes in `buf` (past that it is left
    /// where it is). `Err` at the end of the stream or on an error.
    pub(crate) fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ()> {
        while buf.len() < max {
            match &self.io {
                Io::Plain(tcp) => {
                    match tcp.poll_read_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Err(_)) => return Err(()),
                        Poll::Ready(Ok(())) => {}
                    }
                    let mut chunk = [0u8; 1024];
                    match tcp.try_read(&mut chunk) {
                        Ok(0) => return Err(()),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        // Readiness was cleared: polling it again registers for the next.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(()),
                    }
                }
                Io::Tls { tcp, session } => match poll_read_tls(tcp, session, cx, buf) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0) | Err(_)) => return Err(()),
                    Poll::Ready(Ok(_)) => {}
                },
            }
        }
        Ok(())
    }

    /// Writes some of `bufs` (not all empty): how much was taken. Over TLS the bytes taken
    /// are sealed, and what the socket did not take waits in the session for
    /// [`poll_flush`].
    ///
    /// [`poll_flush`]: Self::poll_flush
    pub(crate) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let small = bufs.len() > 1 && len <= SMALL_WRITE;
        match &self.io {
            Io::Plain(tcp) => loop {
                std::task::ready!(tcp.poll_write_ready(cx))?;
                let n = if small {
                    SCRATCH.with_borrow_mut(|buf| tcp.try_write(gather(buf, bufs)))
                } else {
                    tcp.try_write_vectored(bufs)
                };
                match n {
                    // Readiness was cleared: polling it again registers for the next.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Io::Tls { tcp, session } => {
                let mut session = Self::lock(session);
                std::task::ready!(session.poll_flush(tcp, cx))?;
                Poll::Ready(session.seal(bufs, |b| tcp.try_write(b)))
            }
        }
    }

    /// Writes out what a TLS session holds (nothing to do on a plain connection).
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.io {
            Io::Plain(_) => Poll::Ready(Ok(())),
            Io::Tls { tcp, session } => Self::lock(session).poll_flush(tcp, cx),
        }
    }
}

#[cfg(unix)]
impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match &self.io {
            Io::Plain(tcp) => tcp.as_raw_fd(),
            Io::Tls { tcp, .. } => tcp.as_raw_fd(),
        }
    }
}

/// `bufs` copied into `buf`.
fn gather<'a>(buf: &'a mut Vec<u8>, bufs: &[IoSlice<'_>]) -> &'a [u8] {
    buf.clear();
    for b in bufs {
        buf.extend_from_slice(b);
    }
    buf
}

/// Appends the plaintext a TLS session has or can read now to `buf`.
fn poll_read_tls(
    tcp: &TcpStream,
    session: &Mutex<Session>,
    cx: &mut Context<'_>,
    buf: &mut impl BufMut,
) -> Poll<io::Result<usize>> {
    let mut session = Conn::lock(session);
    if std::task::ready!(session.poll_plain(tcp, cx))? == 0 {
        return Poll::Ready(Ok(0));
    }
    Poll::Ready(Ok(session.take_plain(usize::MAX, |p| buf.put_slice(p))))
}

/// Reads what the socket holds into `buf`'s spare capacity. A read that does not fill it
/// took everything there was, so the socket's readiness is cleared at once: the next wait
/// needs no read that fails with `EAGAIN` (one syscall fewer per keep-alive request).
/// tokio clears it only if no readiness event arrived since it was observed, and never
/// clears the read-closed state, so bytes or an EOF arriving meanwhile still wake the task.
fn read_some(stream: &TcpStream, buf: &mut impl BufMut) -> io::Result<usize> {
    // What `try_read_buf` reads into: the spare room (64 bytes more when there is none).
    let spare = buf.chunk_mut().len();
    let mut got = None;
    let res = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        if n == 0 || n >= spare {
            return Ok(n);
        }
        got = Some(n);
        Err(io::ErrorKind::WouldBlock.into())
    });
    match (res, got) {
        (_, Some(n)) => Ok(n),
        (res, None) => res,
    }
}
