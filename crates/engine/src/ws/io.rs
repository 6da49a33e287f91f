//! The upgraded socket under tungstenite's protocol state ([`Ws`]).
//!
//! tungstenite's `WebSocketContext` (its state, 256 bytes, and its read buffer) exists only
//! while the socket is in the middle of something: a frame or a fragmented message being
//! read, or bytes tungstenite has not written yet. tungstenite is given whole frames only
//! (each frame's header is parsed with tungstenite's own `FrameHeader::parse` to know where
//! it ends), so once it has taken the last frame given and written everything, it holds
//! nothing a new context would not: the connection then drops it ([`Ws::release`]), and an
//! idle socket keeps no protocol state and no buffer. Bytes read from the socket wait in a
//! buffer that exists only while it holds some.
//!
//! On a socket that negotiated permessage-deflate, each frame of a compressed message is
//! inflated before tungstenite gets it: given to it as the same frame with its payload
//! inflated, RSV1 clear and an all-zero mask (see `deflate.rs`). tungstenite then checks
//! the message as it checks any (UTF-8, sizes, fragments), and refuses RSV1 where the
//! extension does not allow it (control frames, continuations, sockets without it).

use std::io::{self, Cursor, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message as Wire;

use super::deflate::{Deflate, Inflater};
use crate::wire::Conn;

/// tungstenite's read buffer (`WebSocketConfig::read_buffer_size`): the most it takes per
/// read.
pub(crate) const READ_BUFFER: usize = 256;

/// The size of one read from the socket.
const READ: usize = 8 << 10;

/// The size of the first read into an empty buffer.
const FIRST_READ: usize = 512;

/// An upgraded connection's bytes: the direct path's connection, plain or TLS (a plain one
/// shared with the sender that lends its socket to channels, see `socket.rs`); hyper's
/// upgraded IO (a connection hyper served); or an HTTP/2 stream (RFC 8441). The last two
/// are boxed, as they are rarer and larger.
pub(crate) enum WsIo {
    Conn(Arc<Conn>),
    Upgraded(Box<TokioIo<hyper::upgrade::Upgraded>>),
    H2(Box<H2Io>),
}

/// An HTTP/2 stream carrying a WebSocket: DATA frames both ways, under the stream's flow
/// control (what is read is released at once, so the client may send as much again).
pub(crate) struct H2Io {
    pub(crate) recv: h2::RecvStream,
    pub(crate) send: h2::SendStream<Bytes>,
}

impl H2Io {
    /// Appends the next DATA frame's bytes to `buf`; 0 at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        buf.extend_from_slice(&data);
                        return Poll::Ready(Ok(data.len()));
                    }
                }
            }
        }
    }

    /// Sends as much of `buf` as the stream has capacity for, waiting for some.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                return Poll::Ready(
                    self.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map(|()| n)
                        .map_err(io::Error::other),
                );
            }
            self.send.reserve_capacity(buf.len());
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    /// Ends the stream (after what was sent).
    fn end(&mut self) -> io::Result<()> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(io::Error::other)
    }
}

/// Where the frames read from the socket stand.
#[derive(Default)]
struct Frames {
    /// Bytes read and not yet given to tungstenite (no buffer while empty).
    unread: BytesMut,
    /// Bytes of the frame being given to tungstenite that it has not had yet: 0 between
    /// frames. `u64::MAX` after a header tungstenite will refuse (it reads on and fails).
    left: u64,
    /// A message in fragments has begun and not ended.
    fragmented: bool,
    /// That message is compressed (its frames are inflated).
    compressed: bool,
    /// Bytes inflated so far of that message.
    inflated: usize,
}

/// An upgraded connection with tungstenite's protocol state, kept only while needed.
pub(crate) struct Ws {
    io: WsIo,
    proto: Option<Box<Proto>>,
    /// With permessage-deflate: the inflating side (kept between messages under the
    /// client's context takeover).
    inflater: Option<Box<Inflater>>,
    max_payload: usize,
    /// tungstenite ended the connection (or failed): reads return `None` from now on.
    ended: bool,
    /// A message given to tungstenite is not all written: flush before the next.
    blocked: bool,
}

/// tungstenite's state and the frames being read: what a socket holds only while busy.
struct Proto {
    ctx: WebSocketContext,
    frames: Frames,
}

impl Proto {
    /// A fresh state for messages of `max_payload` bytes at most, `unread` read first.
    fn new(max_payload: usize, unread: BytesMut) -> Box<Self> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_payload))
            .max_frame_size(Some(max_payload))
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(64 << 10)
            // Only control frames go through tungstenite's buffer (data is framed in
            // `conn.rs`). Past this bound a ping's pong replaces the one still waiting
            // instead of piling up behind a client that does not read (RFC 6455 5.5.3).
            .max_write_buffer_size(128 << 10);
        Box::new(Proto {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            frames: Frames {
                unread,
                ..Frames::default()
            },
        })
    }
}

/// tungstenite's `Read + Write` view of the connection during one poll: `WouldBlock` when
/// the socket would block (the task is woken when it can go on).
struct Std<'a, 'b> {
    io: &'a mut WsIo,
    frames: &'a mut Frames,
    inflater: Option<&'a mut Inflater>,
    max_payload: usize,
    cx: &'a mut Context<'b>,
}

fn would_block<T>(p: Poll<io::Result<T>>) -> io::Result<T> {
    match p {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Read for Std<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.frames.left == 0 {
            self.start_frame()?;
        }
        let f = &mut *self.frames;
        if f.unread.is_empty() && fill(self.io, &mut f.unread, self.cx)? == 0 {
            return Ok(0);
        }
        let n = (f.unread.len() as u64).min(f.left).min(out.len() as u64) as usize;
        out[..n].copy_from_slice(&f.unread[..n]);
        f.unread.advance(n);
        if f.left != u64::MAX {
            f.left -= n as u64;
        }
        if f.unread.is_empty() {
            f.unread = BytesMut::new();
        }
        Ok(n)
    }
}

impl Std<'_, '_> {
    /// A frame starts: reads until its header is whole (and, for a compressed frame, until
    /// it is whole, to inflate it), and sets how many bytes of it tungstenite gets.
    fn start_frame(&mut self) -> io::Result<()> {
        loop {
            let f = &mut *self.frames;
            let mut cursor = Cursor::new(&f.unread[..]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    let head = cursor.position();
                    let inflate = self.inflater.is_some()
                        && header.mask.is_some()
                        && !header.rsv2
                        && !header.rsv3
                        && len <= self.max_payload as u64
                        && match header.opcode {
                            OpCode::Data(Data::Text | Data::Binary) => header.rsv1 && !f.fragmented,
                            OpCode::Data(Data::Continue) => !header.rsv1 && f.compressed,
                            OpCode::Data(Data::Reserved(_)) | OpCode::Control(_) => false,
                        };
                    let left = if inflate {
                        match self.inflate(&header, head as usize, len as usize)? {
                            Some(framed) => framed as u64,
                            // The end within the frame: tungstenite gets what there is.
                            None => u64::MAX,
                        }
                    } else {
                        head.saturating_add(len)
                    };
                    let f = &mut *self.frames;
                    f.left = left;
                    match header.opcode {
                        OpCode::Data(Data::Continue) => f.fragmented &= !header.is_final,
                        OpCode::Data(_) => f.fragmented = !header.is_final,
                        OpCode::Control(_) => {}
                    }
                    return Ok(());
                }
                Ok(None) => {
                    if fill(self.io, &mut f.unread, self.cx)? == 0 {
                        // The end, maybe within a header: tungstenite gets what there is.
                        if !f.unread.is_empty() {
                            f.left = u64::MAX;
                        }
                        return Ok(());
                    }
                }
                Err(_) => {
                    f.left = u64::MAX;
                    return Ok(());
                }
            }
        }
    }

    /// Replaces the compressed frame at the front of the unread bytes (`head` bytes of
    /// header, `len` of payload) with the frame tungstenite gets: its payload inflated,
    /// RSV1 clear, an all-zero mask. Its length; `None` when the connection ended within
    /// the frame. Nothing changes until the frame is whole (a read that would block
    /// returns with the bytes read kept).
    fn inflate(
        &mut self,
        header: &FrameHeader,
        head: usize,
        len: usize,
    ) -> io::Result<Option<usize>> {
        let f = &mut *self.frames;
        while f.unread.len() < head + len {
            f.unread.reserve(head + len - f.unread.len());
            if fill(self.io, &mut f.unread, self.cx)? == 0 {
                return Ok(None);
            }
        }
        let Some(inflater) = self.inflater.as_deref_mut() else {
            return Ok(Some(head + len));
        };
        let mut frame = f.unread.split_to(head + len);
        let payload = &mut frame[head..];
        let mask = header.mask.unwrap_or_default();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        let mut plain = Vec::new();
        let room = self.max_payload.saturating_sub(f.inflated);
        let first = header.opcode != OpCode::Data(Data::Continue);
        inflater.inflate(payload, first, header.is_final, room, &mut plain)?;
        if header.is_final {
            f.compressed = false;
            f.inflated = 0;
        } else {
            f.compressed = true;
            f.inflated += plain.len();
        }
        let mut h = header.clone();
        h.rsv1 = false;
        h.mask = Some([0; 4]);
        let framed = h.len(plain.len() as u64) + plain.len();
        let mut unread = BytesMut::with_capacity(framed + f.unread.len());
        // Writing to a BytesMut cannot fail.
        let _ = h.format(plain.len() as u64, &mut (&mut unread).writer());
        unread.extend_from_slice(&plain);
        unread.extend_from_slice(&f.unread);
        f.unread = unread;
        Ok(Some(framed))
    }
}

/// Reads what the socket has after `buf`'s bytes; 0 at its end. An empty `buf` first gets
/// room for a small message only, so that one costs no 8 KiB.
fn fill(io: &mut WsIo, buf: &mut BytesMut, cx: &mut Context<'_>) -> io::Result<usize> {
    buf.reserve(if buf.capacity() == 0 {
        FIRST_READ
    } else {
        READ
    });
    match io {
        // Into the buffer's spare room as it is (no zeroing first); a short read clears
        // the readiness, so the next wait needs no read that fails with `EAGAIN`.
        WsIo::Conn(conn) => would_block(conn.poll_read_buf(cx, buf)),
        WsIo::Upgraded(up) => {
            would_block(tokio_util::io::poll_read_buf(Pin::new(&mut **up), cx, buf))
        }
        WsIo::H2(h2) => would_block(h2.poll_read(cx, buf)),
    }
}

impl Write for Std<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        would_block(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

/// `Pending` for tungstenite's `WouldBlock`.
fn pending<T>(r: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match r {
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

impl Ws {
    /// `unread`: what was read before the upgrade and belongs to the WebSocket; `deflate`:
    /// permessage-deflate as negotiated.
    pub(crate) fn new(
        io: WsIo,
        unread: Bytes,
        max_payload: usize,
        deflate: Option<Deflate>,
    ) -> Self {
        let mut ws = Ws {
            io,
            proto: None,
            inflater: deflate.map(|d| Box::new(Inflater::new(d))),
            max_payload,
            ended: false,
            blocked: false,
        };
        if !unread.is_empty() {
            ws.proto = Some(Proto::new(max_payload, BytesMut::from(&unread[..])));
        }
        ws
    }

    /// tungstenite's state, made when missing, and the connection as it reads and writes it.
    fn parts<'a, 'b>(
        &'a mut self,
        cx: &'a mut Context<'b>,
    ) -> (&'a mut WebSocketContext, Std<'a, 'b>) {
        let max = self.max_payload;
        let proto = self
            .proto
            .get_or_insert_with(|| Proto::new(max, BytesMut::new()));
        let std = Std {
            io: &mut self.io,
            frames: &mut proto.frames,
            inflater: self.inflater.as_deref_mut(),
            max_payload: max,
            cx,
        };
        (&mut proto.ctx, std)
    }

    /// permessage-deflate as negotiated.
    pub(crate) fn deflate(&self) -> Option<Deflate> {
        self.inflater.as_ref().map(|i| i.deflate)
    }

    /// The next message (pings are answered, fragments joined); `None` at the end.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Wire, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.proto.is_none() {
            // Idle: no state is made unless something arrives (or the connection ends).
            let mut unread = BytesMut::new();
            match fill(&mut self.io, &mut unread, cx) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                _ => self.proto = Some(Proto::new(self.max_payload, unread)),
            }
        }
        let (proto, mut io) = self.parts(cx);
        match ready!(pending(proto.read(&mut io))) {
            Ok(m) => Poll::Ready(Some(Ok(m))),
            Err(e) => {
                self.ended = true;
                match e {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }

    /// `Ready` when a message may be given to [`start_send`](Self::start_send).
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if !self.blocked {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(cx)
    }

    /// Gives tungstenite a message to frame and write (the rest when the socket is full is
    /// written by [`poll_flush`](Self::poll_flush)).
    pub(crate) fn start_send(&mut self, cx: &mut Context<'_>, m: Wire) -> Result<(), WsError> {
        let (proto, mut io) = self.parts(cx);
        match pending(proto.write(&mut io, m)) {
            Poll::Pending => {
                self.blocked = true;
                Ok(())
            }
            Poll::Ready(r) => r,
        }
    }

    /// Writes what tungstenite holds (messages, pongs, the close reply).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let r = match &self.proto {
            None => ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(WsError::Io),
            Some(_) => {
                let (proto, mut io) = self.parts(cx);
                match ready!(pending(proto.flush(&mut io))) {
                    Err(WsError::ConnectionClosed) => Ok(()),
                    r => r,
                }
            }
        };
        self.blocked = false;
        Poll::Ready(r)
    }

    /// Writes bytes already framed straight to the socket (after a flush: nothing of
    /// tungstenite's may be waiting).
    pub(crate) fn poll_write_raw(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    /// Drops tungstenite's state when it holds nothing: between frames, no message in
    /// fragments, everything written (call after a flush that returned `Ready(Ok)`), the
    /// connection open both ways.
    pub(crate) fn release(&mut self) {
        let Some(p) = &self.proto else {
            return;
        };
        let f = &p.frames;
        let between = f.left == 0 && f.unread.is_empty() && !f.fragmented;
        let open = p.ctx.can_read() && p.ctx.can_write();
        if between && open && !self.blocked && !self.ended {
            self.proto = None;
        }
    }

    /// Ends a TLS connection cleanly: writes its `close_notify` after what waits; ends an
    /// HTTP/2 stream. A plain connection needs nothing (its FIN follows when it is
    /// dropped), nor does one hyper upgraded.
    pub(crate) async fn close_notify(&mut self) {
        match &mut self.io {
            WsIo::Conn(conn) => {
                if conn.with_session(|s| s.queue_close_notify()).is_some() {
                    let _ = std::future::poll_fn(|cx| conn.poll_flush(cx)).await;
                }
            }
            WsIo::H2(h2) => {
                let _ = h2.end();
            }
            WsIo::Upgraded(_) => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn holds_state(&self) -> bool {
        self.proto.is_some()
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_write(cx, buf),
            WsIo::Conn(conn) => conn.poll_write(cx, &[io::IoSlice::new(buf)]),
            WsIo::H2(h2) => h2.poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_flush(cx),
            WsIo::Conn(conn) => conn.poll_flush(cx),
            // The connection's task writes what its streams sent.
            WsIo::H2(_) => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_shutdown(cx),
            WsIo::H2(h2) => Poll::Ready(h2.end()),
            WsIo::Conn(conn) => {
                ready!(conn.poll_flush(cx))?;
                // Half-closes the write side, as tokio's TcpStream does.
                let _ = socket2::SockRef::from(conn.tcp()).shutdown(std::net::Shutdown::Write);
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
