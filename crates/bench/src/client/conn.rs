//! One client connection: raw keep-alive TCP (or TLS over it), a reused read buffer and the
//! response decoder.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::http::{Part, ResponseDecoder};
use crate::sys::monotonic_ns;
use crate::tls::TlsClient;

/// A connection's bytes: plain TCP or TLS over it.
pub enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: a TLS session is ~1 KiB, and most runs are plain).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    /// Connects with TCP_NODELAY, then runs the TLS handshake if `tls` is given.
    pub async fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(match tls {
            None => Io::Plain(stream),
            Some(tls) => Io::Tls(Box::new(tls.connect(stream).await?)),
        })
    }
}

impl Io {
    /// [`connect`](Self::connect), retrying failed attempts (a full accept backlog) every
    /// 50 ms until `deadline`.
    pub async fn connect_until(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        deadline: tokio::time::Instant,
    ) -> io::Result<Self> {
        loop {
            match tokio::time::timeout_at(deadline, Self::connect(addr, tls)).await {
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
        Ok(Self::new(Io::connect(addr, tls).await?, buf_size))
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
        buf_size: usize,
        deadline: tokio::time::Instant,
    ) -> io::Result<Self> {
        Ok(Self::new(
            Io::connect_until(addr, tls, deadline).await?,
            buf_size,
        ))
    }

    /// Writes a whole request.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await
    }

    /// Reads until the current response ends. `on_part` gets each part together with the
    /// CLOCK_MONOTONIC time of the read that delivered it (one clock read per `read()`:
    /// everything in one read arrived together). Returns Ok(false) if the server closed
    /// the connection before the response ended.
    pub async fn read_response(
        &mut self,
        mut on_part: impl FnMut(Part<'_>, u64),
    ) -> io::Result<bool> {
        let mut now = monotonic_ns();
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
            now = monotonic_ns();
            self.end += n;
        }
    }
}
