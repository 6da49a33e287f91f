//! One client connection: raw keep-alive TCP (or TLS over it), a reused read buffer and the
//! response decoder.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::http::{Part, ResponseDecoder};
use crate::sys::{enable_rx_timestamps, monotonic_ns, realtime_to_monotonic, recv_stamped};
use crate::tls::TlsClient;

/// A TCP connection that may read the kernel's receive timestamps.
pub struct Tcp {
    stream: TcpStream,
    /// When the last read's newest segment reached the socket, on CLOCK_MONOTONIC (0: no
    /// stamp yet, or stamps are off). Shared with readers above a protocol layer (h2).
    arrival: Option<Arc<AtomicU64>>,
}

impl Tcp {
    /// Where the arrival of the last read's bytes is kept (CLOCK_MONOTONIC ns; 0 when that
    /// read brought no stamp), or None when stamps are off.
    pub fn arrival(&self) -> &Option<Arc<AtomicU64>> {
        &self.arrival
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(arrival) = &this.arrival else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            let fd = this.stream.as_raw_fd();
            let unfilled = buf.initialize_unfilled();
            match this
                .stream
                .try_io(Interest::READABLE, || recv_stamped(fd, unfilled))
            {
                Ok((n, stamp)) => {
                    let at = stamp.map_or(0, realtime_to_monotonic);
                    arrival.store(at, Ordering::Relaxed);
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A connection's bytes: plain TCP or TLS over it.
pub enum Io {
    /// Plain TCP.
    Plain(Tcp),
    /// TLS (boxed: a TLS session is ~1 KiB, and most runs are plain).
    Tls(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

/// Whether a connection reads the kernel's receive timestamps ([`Io::arrival`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stamps {
    Off,
    On,
}

impl Io {
    /// Connects with TCP_NODELAY (and receive timestamps if asked), then runs the TLS
    /// handshake if `tls` is given.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        stamps: Stamps,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let arrival = match stamps {
            Stamps::Off => None,
            Stamps::On => {
                enable_rx_timestamps(stream.as_raw_fd())?;
                Some(Arc::default())
            }
        };
        let stream = Tcp { stream, arrival };
        Ok(match tls {
            None => Io::Plain(stream),
            Some(tls) => Io::Tls(Box::new(tls.connect(stream).await?)),
        })
    }

    /// Where the arrival time of the connection's last read is kept (`Some` when
    /// connected with [`Stamps::On`]).
    pub fn arrival(&self) -> Option<Arc<AtomicU64>> {
        match self {
            Io::Plain(s) => s.arrival().clone(),
            Io::Tls(s) => s.get_ref().0.arrival().clone(),
        }
    }

    /// [`connect`](Self::connect), retrying failed attempts (a full accept backlog) every
    /// 50 ms until `deadline`.
    pub async fn connect_until(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        stamps: Stamps,
        deadline: tokio::time::Instant,
    ) -> io::Result<Self> {
        loop {
            match tokio::time::timeout_at(deadline, Self::connect(addr, tls, stamps)).await {
                Ok(Ok(io)) => return Ok(io),
                Ok(Err(e)) => {
                    if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// When a read's bytes came, on CLOCK_MONOTONIC (ns).
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Just after the read returned: includes the time the client took to get to it.
    pub read: u64,
    /// When the bytes reached the socket, by the kernel's receive timestamp (None when the
    /// connection has no stamps or the read brought none).
    pub arrival: Option<u64>,
}

impl Stamp {
    /// Now, with the arrival kept in `arrival` (if any).
    pub fn now(arrival: Option<&AtomicU64>) -> Self {
        let read = monotonic_ns();
        let arrival = match arrival.map(|a| a.load(Ordering::Relaxed)) {
            Some(t) if t > 0 => Some(t.min(read)),
            _ => None,
        };
        Self { read, arrival }
    }
}

/// A keep-alive HTTP/1.1 connection to the server under test.
pub struct HttpConn {
    stream: Io,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    decoder: ResponseDecoder,
}

/// `GET <path>` with the least a server needs (pipelining is never used).
pub fn get_request(path: &str) -> Vec<u8> {
    get_request_with(path, "")
}

/// [`get_request`] with extra header lines: `headers` is `name: value` pairs separated by
/// `|` (the `--header` option of the scenarios that take it).
pub fn get_request_with(path: &str, headers: &str) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n");
    for h in headers.split('|').map(str::trim).filter(|h| !h.is_empty()) {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

impl HttpConn {
    /// Connects with TCP_NODELAY (and TLS if `tls` is given) and a read buffer of
    /// `buf_size` bytes.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        buf_size: usize,
    ) -> io::Result<Self> {
        Ok(Self::new(
            Io::connect(addr, tls, Stamps::Off).await?,
            buf_size,
        ))
    }

    fn new(stream: Io, buf_size: usize) -> Self {
        Self {
            stream,
            buf: vec![0; buf_size].into_boxed_slice(),
            start: 0,
            end: 0,
            decoder: ResponseDecoder::default(),
        }
    }

    /// Connects, retrying refused or reset attempts (a full accept backlog) every 50 ms
    /// until `deadline`.
    pub async fn connect_until(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        stamps: Stamps,
        buf_size: usize,
        deadline: tokio::time::Instant,
    ) -> io::Result<Self> {
        Ok(Self::new(
            Io::connect_until(addr, tls, stamps, deadline).await?,
            buf_size,
        ))
    }

    /// Writes a whole request.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await
    }

    /// Reads until the current response ends. `on_part` gets each part together with the
    /// times of the read that delivered it (one clock read per `read()`: everything in one
    /// read arrived together). Returns Ok(false) if the server closed the connection
    /// before the response ended.
    pub async fn read_response(
        &mut self,
        mut on_part: impl FnMut(Part<'_>, Stamp),
    ) -> io::Result<bool> {
        let arrival = self.stream.arrival();
        let mut now = Stamp::now(arrival.as_deref());
        loop {
            if self.end > self.start {
                let (used, done) = self
                    .decoder
                    .feed(&self.buf[self.start..self.end], &mut |p| on_part(p, now))?;
                self.start += used;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                if done {
                    return Ok(true);
                }
                if self.end == self.buf.len() {
                    if self.start == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "response head larger than the read buffer",
                        ));
                    }
                    // Only an incomplete head or chunk-size line is left: move it to the front.
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                }
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(false);
            }
            now = Stamp::now(arrival.as_deref());
            self.end += n;
        }
    }
}
