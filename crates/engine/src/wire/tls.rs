//! TLS sessions whose buffers the engine owns (rustls's unbuffered API).
//!
//! A buffered rustls connection keeps a 4 KiB receive buffer after its first read, for as
//! long as it lives: most of what an idle TLS subscriber would hold. Here records are read
//! into a per-thread buffer and decrypted there; a session keeps only the bytes of a record
//! not yet complete. Writes are sealed into a per-thread buffer and sent at once; a session
//! keeps only what the socket did not take. An idle session holds no buffer.
//!
//! rustls does the handshake. After it a TLS 1.3 session's records are sealed and opened
//! by [`Records`], which keeps the keys and rustls's key schedule only (TLS 1.2 sessions
//! stay with rustls).
//!
//! [`Session`] is driven by its owner's socket: the direct HTTP/1.1 path's
//! [`Conn`](super::Conn) (whose sink seals and sends from a producer's thread), or
//! [`TlsIo`], the `AsyncRead`/`AsyncWrite` the HTTP/2 server (`server/h2/`) and hyper
//! (handed-over HTTP/1.1) serve on.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
};
use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::records::Records;

/// The largest TLS record on the wire: a 16 KiB fragment, the most expansion TLS 1.2
/// allows, and the record header.
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Plaintext sealed by one write at most: past it, a write takes part of what it is given.
const MAX_SEAL: usize = 64 * 1024;

thread_local! {
    /// Records read from a socket (after the bytes of an incomplete one) and decrypted in
    /// place: one per runtime or producer thread.
    static RECV: RefCell<Vec<u8>> = RefCell::new(vec![0; 2 * MAX_RECORD]);
    /// Plaintext gathered from a vectored write, and the records it is sealed into.
    static SEAL: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A server's TLS session: its record layer, and the few bytes it cannot give away yet.
pub(crate) struct Session {
    layer: Layer,
    /// ALPN chose HTTP/2.
    h2: bool,
    /// Received bytes of a record not yet complete.
    partial: Vec<u8>,
    /// Decrypted plaintext not yet taken by a reader.
    plain: Vec<u8>,
    /// Sealed bytes the socket has not taken yet: they go out before anything else.
    unsent: Vec<u8>,
    /// The peer closed its side (`close_notify`, or the end of the TCP stream).
    eof: bool,
}

enum Layer {
    /// rustls's session: during the handshake, and after it for TLS 1.2.
    Rustls(Box<UnbufferedServerConnection>),
    /// The engine's TLS 1.3 records.
    Own(Records),
    /// Handing the session over failed: the connection is unusable.
    Failed,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Session {
    /// The handshake on `tcp`, to its end. Plaintext the client sent right after it is
    /// kept for the first read.
    pub(crate) async fn accept(
        tcp: &TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Box<Session>> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut s = Box::new(Session {
            layer: Layer::Rustls(Box::new(conn)),
            h2: false,
            partial: Vec::new(),
            plain: Vec::new(),
            unsent: Vec::new(),
            eof: false,
        });
        std::future::poll_fn(|cx| -> Poll<io::Result<()>> {
            loop {
                ready!(s.poll_flush(tcp, cx))?;
                if !s.rustls().is_handshaking() {
                    return Poll::Ready(Ok(()));
                }
                if s.eof {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                ready!(s.poll_receive(tcp, cx))?;
            }
        })
        .await?;
        s.h2 = s.rustls().alpn_protocol() == Some(b"h2");
        s.take_over()?;
        Ok(s)
    }

    /// rustls's session, during the handshake.
    fn rustls(&self) -> &UnbufferedServerConnection {
        match &self.layer {
            Layer::Rustls(conn) => conn,
            _ => unreachable!("the handshake is rustls's"),
        }
    }

    /// After the handshake: a TLS 1.3 session's records become the engine's, once rustls
    /// has handed out what it had to send (the session tickets).
    fn take_over(&mut self) -> io::Result<()> {
        let Layer::Rustls(conn) = &mut self.layer else {
            return Ok(());
        };
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return Ok(());
        }
        loop {
            match conn.process_tls_records(&mut []).state.map_err(invalid)? {
                ConnectionState::EncodeTlsData(mut data) => encode(&mut self.unsent, &mut data)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::WriteTraffic(_) => break,
                _ => return Ok(()),
            }
        }
        let Layer::Rustls(conn) = std::mem::replace(&mut self.layer, Layer::Failed) else {
            unreachable!()
        };
        self.layer = Layer::Own(Records::take_over(*conn).map_err(invalid)?);
        Ok(())
    }

    /// ALPN chose HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }

    /// True while sealed bytes wait for the socket.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Waits until plaintext is there or the peer is done: `Ok(0)` at the end, else how
    /// much plaintext [`take_plain`](Self::take_plain) gives.
    pub(crate) fn poll_plain(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.plain.is_empty() || self.eof {
                return Poll::Ready(Ok(self.plain.len()));
            }
            // A reply the session owes the peer (a key update's) goes out as soon as it can.
            if self.has_unsent() {
                if let Poll::Ready(Err(e)) = self.poll_flush(tcp, cx) {
                    return Poll::Ready(Err(e));
                }
            }
            ready!(self.poll_receive(tcp, cx))?;
        }
    }

    /// Up to `max` bytes of the plaintext received, handed to `f`.
    pub(crate) fn take_plain(&mut self, max: usize, f: impl FnOnce(&[u8])) -> usize {
        let n = self.plain.len().min(max);
        f(&self.plain[..n]);
        if n == self.plain.len() {
            self.plain = Vec::new();
        } else {
            self.plain.drain(..n);
        }
        n
    }

    /// Reads what `tcp` holds and processes it (waiting for it if there is none).
    fn poll_receive(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let read = RECV.with_borrow_mut(|buf| {
                let kept = self.partial.len();
                buf[..kept].copy_from_slice(&self.partial);
                let n = tcp.try_read(&mut buf[kept..])?;
                if n == 0 {
                    self.eof = true;
                    return Ok(());
                }
                self.process(&mut buf[..kept + n])
            });
            match read {
                // Readiness was cleared: polling it again registers for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // The alert that says why, if the socket takes it.
                    if self.has_unsent() {
                        let _ = tcp.try_write(&self.unsent);
                    }
                    return Poll::Ready(Err(e));
                }
                Ok(()) => {
                    if self.eof {
                        self.partial = Vec::new();
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Processes the records in `buf`: plaintext to `plain`, handshake messages and alerts
    /// to `unsent`, the bytes of an incomplete record kept in `partial`.
    fn process(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let at = match &mut self.layer {
            Layer::Own(records) => {
                let opened = records.open(buf, &mut self.plain, &mut self.unsent)?;
                self.eof |= opened.closed;
                opened.used
            }
            Layer::Rustls(_) => self.process_rustls(buf)?,
            Layer::Failed => return Err(io::ErrorKind::NotConnected.into()),
        };
        if at == buf.len() {
            self.partial = Vec::new();
        } else {
            self.partial.clear();
            self.partial.extend_from_slice(&buf[at..]);
        }
        Ok(())
    }

    /// [`process`](Self::process) by rustls: how many bytes of `buf` it consumed.
    fn process_rustls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Layer::Rustls(conn) = &mut self.layer else {
            unreachable!()
        };
        let mut at = 0;
        loop {
            let status = conn.process_tls_records(&mut buf[at..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    queue_alert(conn, &mut self.unsent);
                    return Err(invalid(e));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => encode(&mut self.unsent, &mut data)?,
                // `unsent` goes out before anything sealed later.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::PeerClosed => self.eof = true,
                ConnectionState::Closed => {
                    self.eof = true;
                    at += discard;
                    break;
                }
                // Waiting for more bytes (of the handshake or of a record).
                _ => {
                    at += discard;
                    break;
                }
            }
            at += discard;
        }
        Ok(at)
    }

    /// Seals `bufs` (up to [`MAX_SEAL`] bytes of them) and hands the records to `send`,
    /// which takes what the socket does: the rest is kept, and goes out before anything
    /// else. Returns how much plaintext was sealed.
    pub(crate) fn seal(
        &mut self,
        bufs: &[IoSlice<'_>],
        send: impl FnOnce(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        SEAL.with_borrow_mut(|(plain, sealed)| {
            let data: &[u8] = match bufs {
                [one] => &one[..one.len().min(MAX_SEAL)],
                _ => {
                    plain.clear();
                    for b in bufs {
                        let room = MAX_SEAL - plain.len();
                        plain.extend_from_slice(&b[..b.len().min(room)]);
                    }
                    plain
                }
            };
            if data.is_empty() {
                return Ok(0);
            }
            let n = self.seal_into(data, sealed)?;
            if self.unsent.is_empty() {
                let sent = match send(&sealed[..n]) {
                    Ok(sent) => sent,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                self.unsent.extend_from_slice(&sealed[sent..n]);
            } else {
                self.unsent.extend_from_slice(&sealed[..n]);
            }
            Ok(data.len())
        })
    }

    /// `data` sealed into `sealed` as records: their length.
    fn seal_into(&mut self, data: &[u8], sealed: &mut Vec<u8>) -> io::Result<usize> {
        let conn = match &mut self.layer {
            Layer::Own(records) => {
                sealed.clear();
                records.seal(data, sealed)?;
                return Ok(sealed.len());
            }
            Layer::Rustls(conn) => conn,
            Layer::Failed => return Err(io::ErrorKind::NotConnected.into()),
        };
        let records = data.len().div_ceil(16 * 1024);
        let mut need = data.len() + records * 64;
        loop {
            if sealed.len() < need {
                sealed.resize(need, 0);
            }
            let status = conn.process_tls_records(&mut []);
            match status.state.map_err(invalid)? {
                ConnectionState::WriteTraffic(mut w) => match w.encrypt(data, sealed) {
                    Ok(n) => return Ok(n),
                    Err(EncryptError::InsufficientSize(e)) => need = e.required_size,
                    Err(e) => return Err(invalid(e.to_string())),
                },
                // A handshake message the session owes (a key update's): it goes first.
                ConnectionState::EncodeTlsData(mut d) => encode(&mut self.unsent, &mut d)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                _ => return Err(io::ErrorKind::NotConnected.into()),
            }
        }
    }

    /// Writes out what the socket did not take before.
    pub(crate) fn poll_flush(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.unsent.is_empty() {
            ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write(&self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                // Readiness was cleared: polling it again registers for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.unsent = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Queues a `close_notify` (once the handshake is done).
    pub(crate) fn queue_close_notify(&mut self) {
        let conn = match &mut self.layer {
            Layer::Own(records) => return records.close_notify(&mut self.unsent),
            Layer::Rustls(conn) => conn,
            Layer::Failed => return,
        };
        let status = conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = status.state {
            let mut alert = [0u8; 64];
            if let Ok(n) = w.queue_close_notify(&mut alert) {
                self.unsent.extend_from_slice(&alert[..n]);
            }
        }
    }

    /// Sends a `close_notify` (after what waits), then closes the write side.
    pub(crate) async fn close(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        self.queue_close_notify();
        std::future::poll_fn(|cx| self.poll_flush(tcp, cx)).await?;
        tcp.shutdown().await
    }
}

/// Queues what rustls has for a peer it failed with: the alert, after the handshake
/// messages it goes with.
fn queue_alert(conn: &mut UnbufferedServerConnection, unsent: &mut Vec<u8>) {
    loop {
        let status = conn.process_tls_records(&mut []);
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                if encode(unsent, &mut data).is_err() {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            _ => return,
        }
    }
}

/// Appends a handshake record to `unsent`.
fn encode<D>(unsent: &mut Vec<u8>, data: &mut EncodeTlsData<'_, D>) -> io::Result<()> {
    let start = unsent.len();
    let mut need = 4096;
    loop {
        unsent.resize(start + need, 0);
        match data.encode(&mut unsent[start..]) {
            Ok(n) => {
                unsent.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                need = required_size;
            }
            Err(e) => {
                unsent.truncate(start);
                return Err(invalid(e.to_string()));
            }
        }
    }
}

/// A TLS connection as hyper takes it: its socket and its session.
pub(crate) struct TlsIo {
    pub(crate) tcp: TcpStream,
    pub(crate) session: Box<Session>,
    /// `close_notify` was queued.
    closing: bool,
}

impl TlsIo {
    pub(crate) fn new(tcp: TcpStream, session: Box<Session>) -> TlsIo {
        TlsIo {
            tcp,
            session,
            closing: false,
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if ready!(this.session.poll_plain(&this.tcp, cx))? > 0 {
            this.session
                .take_plain(buf.remaining(), |p| buf.put_slice(p));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.session.poll_flush(&this.tcp, cx))?;
        let tcp = &this.tcp;
        Poll::Ready(this.session.seal(bufs, |b| tcp.try_write(b)))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.session.poll_flush(&this.tcp, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.session.queue_close_notify();
        }
        ready!(this.session.poll_flush(&this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
