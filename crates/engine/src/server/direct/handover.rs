//! The hand-over of a connection to hyper (or, when it opens with HTTP/2's preface, to the
//! HTTP/2 server), with the bytes already read replayed first.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::server::Shared;
use crate::wire::conn::{Conn, Unwrapped};

/// The start of HTTP/2's connection preface (RFC 9113 §3.4): what a client with prior
/// knowledge (h2c) sends first, read by the direct path as a head.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The rest of the connection, starting with `prefix`, goes to the engine's HTTP/2 server
/// when it opens with HTTP/2's preface, to hyper otherwise.
pub(super) async fn serve_handed_over(stream: Conn, prefix: Bytes, shared: Arc<Shared>) {
    let h2 = prefix.starts_with(H2_PREFACE);
    match stream.into_inner() {
        Unwrapped::Plain(tcp) => {
            // Asked for here rather than kept by every task (32 bytes each); a client
            // already gone (no peer address) is not served.
            let Ok(peer) = tcp.peer_addr() else {
                return;
            };
            let io = Prefixed::new(prefix, tcp);
            if h2 {
                crate::server::h2::serve(io, peer, &shared).await;
            } else {
                crate::server::serve_io(io, peer, &shared).await;
            }
        }
        Unwrapped::Tls(tls) => {
            let Ok(peer) = tls.tcp.peer_addr() else {
                return;
            };
            let io = Prefixed::new(prefix, tls);
            if h2 {
                crate::server::h2::serve(io, peer, &shared).await;
            } else {
                crate::server::serve_io(io, peer, &shared).await;
            }
        }
    }
}

/// The TCP stream of a connection hyper upgraded, if it is one the direct path handed over,
/// with the bytes read and not yet taken (hyper's and the replay's), which come first;
/// else the upgraded IO back.
pub(crate) fn upgraded_tcp(
    up: hyper::upgrade::Upgraded,
) -> Result<(Bytes, TcpStream), hyper::upgrade::Upgraded> {
    type Handed = hyper_util::rt::TokioIo<Prefixed<TcpStream>>;
    let parts = hyper_util::server::conn::auto::upgrade::downcast::<Handed>(up)?;
    let Prefixed { prefix, io } = parts.io.into_inner();
    // An empty slice of hyper's read buffer would keep the whole buffer.
    let unread = match (parts.read_buf.is_empty(), prefix.is_empty()) {
        (true, true) => Bytes::new(),
        (false, true) => Bytes::copy_from_slice(&parts.read_buf),
        (true, false) => prefix,
        (false, false) => [parts.read_buf, prefix].concat().into(),
    };
    Ok((unread, io))
}

/// An IO that first replays bytes already read from it.
struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    fn new(prefix: Bytes, io: T) -> Self {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            self.prefix = Bytes::new(); // free the buffer
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
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
        bufs: &[IoSlice<'_>],
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
