//! The upgraded socket as tungstenite reads it: tungstenite keeps a read buffer of
//! [`READ_BUFFER`] bytes per socket for its life, so a read that fills it (more may be
//! waiting) is followed by one into a larger buffer that exists only while it holds bytes
//! tungstenite has not taken yet. An idle socket keeps no read buffer beyond
//! tungstenite's small one, and a poll that finds nothing to read allocates nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::Conn;

/// tungstenite's read buffer (`WebSocketConfig::read_buffer_size`): the most it takes
/// from [`OnDemand`] per call.
pub(crate) const READ_BUFFER: usize = 256;

/// The size of one read from the socket.
const READ: usize = 8 << 10;

/// An IO whose reads go through a buffer allocated for a read and freed once emptied.
pub(crate) struct OnDemand<T> {
    io: T,
    /// Bytes read and not yet taken; or, empty with room, the large buffer the next read
    /// goes into (after a read that filled the caller's buffer).
    unread: BytesMut,
}

impl<T> OnDemand<T> {
    pub(crate) fn new(io: T) -> Self {
        OnDemand {
            io,
            unread: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for OnDemand<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            if this.unread.capacity() == 0 || out.remaining() >= READ {
                let before = out.remaining();
                ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
                if before > 0 && out.remaining() == 0 {
                    this.unread = BytesMut::with_capacity(READ);
                }
                return Poll::Ready(Ok(()));
            }
            // Dropped (freed) if nothing is there to read.
            let mut buf = std::mem::take(&mut this.unread);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut buf
            ))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.unread = buf;
        }
        let n = this.unread.len().min(out.remaining());
        out.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        if this.unread.is_empty() {
            this.unread = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OnDemand<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An upgraded connection's bytes: its TCP stream, shared with the sender that lends it to
/// channels (see `socket.rs`), after what was read before the upgrade; or hyper's upgraded
/// IO (TLS).
pub(crate) enum WsIo {
    Tcp { unread: Bytes, tcp: Arc<Conn> },
    Upgraded(TokioIo<hyper::upgrade::Upgraded>),
}

/// The TCP stream of a connection made [`WsIo::Tcp`] (always a plain one).
fn plain(conn: &Conn) -> &TcpStream {
    conn.plain_tcp()
        .expect("WsIo::Tcp holds a plain connection")
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
            WsIo::Tcp { unread, tcp } => {
                let tcp = plain(tcp);
                if !unread.is_empty() {
                    let n = unread.len().min(buf.remaining());
                    buf.put_slice(&unread[..n]);
                    unread.advance(n);
                    if unread.is_empty() {
                        *unread = Bytes::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                loop {
                    ready!(tcp.poll_read_ready(cx))?;
                    match tcp.try_read(buf.initialize_unfilled()) {
                        Ok(n) => {
                            buf.advance(n);
                            return Poll::Ready(Ok(()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
            WsIo::Tcp { tcp, .. } => loop {
                let tcp = plain(tcp);
                ready!(tcp.poll_write_ready(cx))?;
                match tcp.try_write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    res => return Poll::Ready(res),
                }
            },
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(io).poll_flush(cx),
            WsIo::Tcp { .. } => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            WsIo::Tcp { tcp, .. } => {
                // Half-closes the write side, as tokio's TcpStream does.
                let _ = socket2::SockRef::from(plain(tcp)).shutdown(std::net::Shutdown::Write);
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_every_byte_in_small_reads_and_keeps_no_buffer_once_emptied() {
        let (mut a, b) = tokio::io::duplex(64 << 10);
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).await.unwrap();
        drop(a);
        let mut r = OnDemand::new(b);
        let mut got = Vec::new();
        let mut chunk = [0u8; READ_BUFFER];
        let mut buffered = false;
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if !r.unread.is_empty() {
                buffered = true;
            }
            if r.unread.is_empty() && n < READ_BUFFER {
                assert_eq!(r.unread.capacity(), 0, "an emptied buffer is freed");
            }
        }
        assert_eq!(got, data);
        assert_eq!(r.unread.capacity(), 0, "nothing kept at the end");
        assert!(
            buffered,
            "reads after a full one go through the large buffer"
        );
    }
}
