//! The lean HTTP/1.1 path for long-lived routes, and the hand-over to hyper for the rest.
//!
//! hyper keeps two 8 KiB buffers per HTTP/1 connection (its read buffer and its header
//! write buffer) for as long as the connection lives: 16 KiB for every idle SSE
//! subscriber. So each connection starts here: its first request head is read into a
//! small buffer and parsed; a plain `GET` for a route registered as
//! [`long_lived`](crate::RouteOptions::long_lived) is answered directly on the socket
//! (response head written once, then the body's frames as chunks), keeping no buffer
//! while the response streams. Anything else goes to hyper's auto builder with the bytes
//! already read replayed in front of the socket, so hyper serves it exactly as if it had
//! read them itself (h2c, HEAD, bodies, upgrades, malformed heads...).

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{service, Shared};
use crate::app::Route;
use crate::metrics::Metrics;
use crate::router::{Params, RouteMatch};
use crate::stream::Body;

/// hyper's auto builder, as the accept loop configures it.
pub(crate) type Builder = auto::Builder<TokioExecutor>;

/// The first read of a request head. Just under 1 KiB: glibc's malloc serves 1 KiB and up
/// from its large bins, and each such request first consolidates the fast bins (~1% of
/// the CPU of a small request when it happened once per request).
const FIRST_READ: usize = 1000;
/// A head not complete within this many bytes goes to hyper (which answers it per its
/// own limits).
const MAX_HEAD: usize = 16 * 1024;
/// Header lines parsed here; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Bytes of pipelined requests kept while a response streams; past it the socket is not
/// read until the response is done.
const MAX_PIPELINED: usize = MAX_HEAD;
/// Bytes read at once, on the stack, while a response streams (pipelined requests, or the
/// EOF of a client that went away).
const PROBE: usize = 1024;
/// Frames up to this size are copied into one buffer and written with `write`; larger
/// ones go out with `writev` (no copy).
const SMALL_WRITE: usize = 4096;

thread_local! {
    /// The buffer small frames are copied into (per runtime thread, reused).
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SMALL_WRITE));
}

thread_local! {
    /// The `date` header value and the second it was formatted for.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// The last chunk of a chunked body.
const END: &[u8] = b"0\r\n\r\n";

/// Serves one accepted connection until it closes, counting it out of the active ones.
/// `peer` is the address accept gave (asking the socket costs a syscall per request),
/// boxed: 8 bytes in this task instead of 32 (see the size test).
///
/// This and the futures it awaits while streaming are `async move` blocks rather than
/// `async fn`s: an `async fn` keeps its arguments twice (as captured and as locals), and
/// this task's size is paid by every idle subscriber.
#[allow(clippy::manual_async_fn)] // not an `async fn`: see above
pub(crate) fn connection(
    stream: TcpStream,
    peer: Box<SocketAddr>,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Shared with the producers of a streaming response, which write to it themselves
        // while this task has nothing to write (see `Body::attach_sink`).
        let stream = Arc::new(stream);
        let handover = tokio::select! {
            biased;
            _ = shared.force.cancelled() => None,
            h = direct(&stream, peer, &shared) => h,
        };
        let metrics = shared.metrics.clone();
        // Sinks go with their bodies, so this task holds the only reference now.
        if let Ok(mut stream) = Arc::try_unwrap(stream) {
            match handover {
                // Boxed: this task's own state stays small while it serves directly.
                Some(prefix) => Box::pin(serve_hyper(stream, Bytes::from(prefix), shared)).await,
                None => {
                    let _ = stream.shutdown().await;
                }
            }
        }
        Metrics::sub(&metrics.active_connections, 1);
    }
}

/// hyper serves the rest of the connection, starting with `prefix`.
async fn serve_hyper(stream: TcpStream, prefix: Bytes, shared: Arc<Shared>) {
    // Asked for here rather than kept by every task (32 bytes each); a client already
    // gone (no peer address) is not served.
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    super::serve_io(Prefixed::new(prefix, stream), peer, &shared).await;
}

/// Serves requests directly while they qualify. Returns the bytes read but not served
/// when the connection goes to hyper, `None` once it is done (the caller shuts it down).
#[allow(clippy::manual_async_fn)] // see `connection`
fn direct<'a>(
    stream: &'a Arc<TcpStream>,
    peer: Box<SocketAddr>,
    shared: &'a Shared,
) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send + 'a {
    async move {
        // Bytes read after the last head (a pipelined request).
        let mut pending = Vec::new();
        let mut first = true;
        loop {
            // Boxed, as the handler call in `serve`: this task's size is that of its largest
            // state, which should be the one it idles in (streaming).
            let req = match Box::pin(read_head(stream, &mut pending, *peer, shared, first)).await {
                HeadRead::Direct(req) => req,
                HeadRead::Handover(buf) => return Some(buf),
                HeadRead::Closed => break,
            };
            first = false;
            if !serve(stream, shared, req, &mut pending).await || shared.graceful.is_cancelled() {
                break;
            }
        }
        None
    }
}

enum HeadRead<'a> {
    /// A qualifying request (what followed its head is left in `pending`).
    Direct(Box<DirectRequest<'a>>),
    /// Everything else: the bytes read so far.
    Handover(Vec<u8>),
    /// EOF, an error, the header timeout or shutdown before a complete head, or a head
    /// past a limit (answered before this returns).
    Closed,
}

/// Reads a request head, starting with the `pending` bytes. A connection's `first` head
/// has the header timeout from the start; a later one waits for its first byte up to the
/// idle timeout (keep-alive), then has the header timeout.
async fn read_head<'a>(
    stream: &Arc<TcpStream>,
    pending: &mut Vec<u8>,
    peer: SocketAddr,
    shared: &'a Shared,
    first: bool,
) -> HeadRead<'a> {
    let config = &shared.config;
    let mut buf = std::mem::take(pending);
    let mut idle = !first && buf.is_empty();
    let mut deadline = Instant::now()
        + if idle {
            config.idle_timeout
        } else {
            config.header_timeout
        };
    loop {
        if idle && !buf.is_empty() {
            idle = false;
            deadline = Instant::now() + config.header_timeout;
        }
        if !buf.is_empty() {
            match parse(&buf, peer, shared) {
                Parse::Partial => {}
                Parse::Handover => return HeadRead::Handover(buf),
                Parse::Refuse(status, msg) => {
                    refuse(stream, shared, status, &msg, pending).await;
                    return HeadRead::Closed;
                }
                Parse::Direct(req) => {
                    // Keep only what follows the head, else free the buffer.
                    if buf.len() > req.head_len {
                        *pending = buf[req.head_len..].to_vec();
                    }
                    return HeadRead::Direct(req);
                }
            }
        }
        // Wait without a buffer: an idle keep-alive connection holds none.
        tokio::select! {
            biased;
            _ = shared.graceful.cancelled() => return HeadRead::Closed,
            r = stream.readable() => if r.is_err() { return HeadRead::Closed },
            _ = tokio::time::sleep_until(deadline) => {
                if !idle {
                    Metrics::add(&shared.metrics.header_timeouts, 1);
                }
                return HeadRead::Closed;
            }
        }
        if buf.len() == buf.capacity() {
            let more = if buf.is_empty() {
                FIRST_READ
            } else {
                buf.len()
            };
            buf.reserve_exact(more.min(MAX_HEAD - buf.len()));
        }
        match read_some(stream, &mut buf) {
            Ok(0) => return HeadRead::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// Reads what the socket holds into `buf`'s spare capacity. A read that does not fill it
/// took everything there was, so the socket's readiness is cleared at once: the next wait
/// needs no read that fails with `EAGAIN` (one syscall fewer per keep-alive request).
/// tokio clears it only if no readiness event arrived since it was observed, and never
/// clears the read-closed state, so bytes or an EOF arriving meanwhile still wake the task.
fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.capacity() - buf.len();
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

/// A request served directly.
struct DirectRequest<'a> {
    head_len: usize,
    peer: SocketAddr,
    parts: http::request::Parts,
    route: &'a Route,
    params: Params,
    /// The client allows the connection to be reused (HTTP/1.1 without `close`).
    keep_alive: bool,
}

enum Parse<'a> {
    Partial,
    Handover,
    Refuse(StatusCode, String),
    Direct(Box<DirectRequest<'a>>),
}

/// Parses a head and decides whether it is served here: a complete HTTP/1.x `GET` in
/// origin form, without a body, upgrade or expectation, for a long-lived route. A head or
/// target past the server's limits is refused (431, 414), whatever serves it.
fn parse<'a>(buf: &[u8], peer: SocketAddr, shared: &'a Shared) -> Parse<'a> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let max_head = shared.config.max_header_bytes;
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_head => return head_too_large(max_head),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            // Still in the request line: it is the target that is too long.
            if !buf.contains(&b'\n') {
                let max = shared.config.max_url_bytes;
                let msg = format!("the request target is longer than {max} bytes");
                return Parse::Refuse(StatusCode::URI_TOO_LONG, msg);
            }
            return head_too_large(max_head);
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parse::Partial,
        _ => return Parse::Handover,
    };
    if let Some(path) = req.path.filter(|p| p.len() > shared.config.max_url_bytes) {
        let max = shared.config.max_url_bytes;
        let msg = format!("the request target is {} bytes; {max} at most", path.len());
        return Parse::Refuse(StatusCode::URI_TOO_LONG, msg);
    }
    if req.method != Some("GET") {
        return Parse::Handover;
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parse::Handover,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parse::Handover;
    };
    let Ok(uri) = Uri::try_from(path) else {
        return Parse::Handover;
    };
    let mut keep_alive = version == Version::HTTP_11;
    let mut hosts = 0;
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parse::Handover;
        };
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            if h.value.trim_ascii() != b"0" {
                return Parse::Handover;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return Parse::Handover;
        } else if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::Handover;
                }
            }
        }
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return Parse::Handover;
        };
        map.append(name, value);
    }
    if !service::host_ok(version, hosts) {
        return Parse::Handover; // hyper's path answers it with 400
    }
    let (route, params) = match shared.app.router.at(&Method::GET, uri.path()) {
        RouteMatch::Found(m) if m.value.options.long_lived => (m.value, m.params),
        _ => return Parse::Handover,
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = uri;
    parts.version = version;
    parts.headers = map;
    Parse::Direct(Box::new(DirectRequest {
        head_len,
        peer,
        parts,
        route,
        params,
        keep_alive,
    }))
}

fn head_too_large<'a>(max: usize) -> Parse<'a> {
    let msg = format!("the request head is larger than {max} bytes");
    Parse::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, msg)
}

/// Answers a request refused before it was parsed in full (`status`, a JSON body) and
/// ends the connection.
async fn refuse(
    stream: &Arc<TcpStream>,
    shared: &Shared,
    status: StatusCode,
    msg: &str,
    pending: &mut Vec<u8>,
) {
    Metrics::add(&shared.metrics.total_requests, 1);
    let res = service::closing(service::rejected(&shared.metrics, status, msg));
    let Some((mut body, framing, _, mut out, mut ended)) =
        start(shared, res, Version::HTTP_11, false)
    else {
        return;
    };
    let mut sink = false;
    let _ = poll_fn(|cx| {
        poll_response(
            cx, stream, &mut body, framing, pending, &mut out, &mut ended, &mut sink,
        )
    })
    .await;
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (204, 304).
    None,
    /// `content-length` (a full body).
    Length,
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes.
    Close,
}

/// Serves one request; true when the connection may carry another.
#[allow(clippy::manual_async_fn)] // see `connection`
fn serve<'a>(
    stream: &'a Arc<TcpStream>,
    shared: &'a Shared,
    req: Box<DirectRequest<'a>>,
    pending: &'a mut Vec<u8>,
) -> impl std::future::Future<Output = bool> + Send + 'a {
    async move {
        // The steps before streaming run in plain functions or boxed futures so that this
        // future keeps only what streaming needs (its size is that of its largest state). The
        // response and what `start` made of it live in this block, so their storage is not
        // kept next to the closure while it streams.
        let (respond, keep_alive) = {
            let (version, keep_alive) = (req.parts.version, req.keep_alive);
            let log = shared.config.access_log.as_ref();
            let p = &req.parts;
            let access =
                crate::access::Pending::new(log, &p.method, &p.uri, &p.headers, Some(req.peer))
                    .map(Box::new);
            let Some(res) = until_gone(stream, pending, call(shared, req)).await else {
                return false;
            };
            if let Some(a) = access {
                a.finish(log, &res);
            }
            let Some((mut body, framing, keep_alive, mut out, mut ended)) =
                start(shared, res, version, keep_alive)
            else {
                return false;
            };
            // The closure owns the body and what is being written: the streaming state is this.
            let mut sink = false;
            let respond = poll_fn(move |cx| {
                poll_response(
                    cx, stream, &mut body, framing, pending, &mut out, &mut ended, &mut sink,
                )
            });
            (respond, keep_alive)
        };
        respond.await.is_ok() && keep_alive
    }
}

/// Awaits `res` while reading the socket (pipelined bytes go to `pending`), so that a
/// client that leaves before its response is ready is noticed at once: `None` then, and
/// `res` is dropped, which tells its handler (a front end aborts the request's signal).
async fn until_gone<F: std::future::Future + Unpin>(
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    mut res: F,
) -> Option<F::Output> {
    poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut res).poll(cx) {
            return Poll::Ready(Some(r));
        }
        match probe(cx, stream, pending) {
            Ok(()) => Poll::Pending,
            Err(()) => Poll::Ready(None),
        }
    })
    .await
}

/// Counts the request and calls its handler (see [`service::respond`]).
fn call<'a>(
    shared: &'a Shared,
    req: Box<DirectRequest<'a>>,
) -> Pin<Box<impl std::future::Future<Output = crate::Response> + Send + 'a>> {
    Metrics::add(&shared.metrics.total_requests, 1);
    let DirectRequest {
        parts,
        route,
        params,
        peer,
        ..
    } = *req;
    Box::pin(service::respond(
        shared,
        Some(peer),
        route,
        params,
        false,
        parts,
        Bytes::new(),
        None,
    ))
}

/// Readies a response for the wire: its framing, whether the connection is kept, its
/// head queued (with the first frame when one is ready: a full body, or a stream whose
/// producer already queued something). `None` if the body failed at once.
fn start(
    shared: &Shared,
    res: crate::Response,
    version: Version,
    keep_alive: bool,
) -> Option<(Body, Framing, bool, Out, bool)> {
    let (head, mut body) = res.into_parts();
    let mut status = head.status;
    if status.is_informational() {
        // As hyper does: a 1xx cannot be the final response.
        status = StatusCode::INTERNAL_SERVER_ERROR;
        body = Body::empty();
    }
    body.report_stalls();
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        body = Body::empty();
        Framing::None
    } else if !body.is_streaming() {
        Framing::Length
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    let keep_alive = keep_alive
        && shared.config.keep_alive
        && framing != Framing::Close
        && !asks_close(&head.headers)
        && !shared.graceful.is_cancelled();
    let length = body.size_hint().exact().unwrap_or(0);
    let mut out = Out::new(encode_head(
        version,
        status,
        &head.headers,
        (framing, length),
        keep_alive,
    ));
    let mut ended = false;
    match body.frame().now_or_never() {
        None => {}
        Some(None) => ended = true,
        Some(Some(Ok(frame))) => {
            if let Ok(data) = frame.into_data() {
                out.set_data(framing, data);
            }
        }
        Some(Some(Err(_))) => return None,
    }
    if ended && framing == Framing::Chunked {
        out.set_end();
    }
    Some((body, framing, keep_alive, out, ended))
}

/// Writes what `out` holds, then the body's frames until it ends. While waiting it also
/// reads the socket, so that a client that goes away is noticed at once (the caller then
/// drops the body, which tells the producer); bytes of a pipelined request are kept in
/// `pending`. Once the head is out, a streaming body's producers may write to the socket
/// themselves while nothing is left here to write (`sink` records that this was offered).
/// `Err` when the body failed (the connection is cut, as hyper does) or the client went
/// away.
#[allow(clippy::too_many_arguments)] // the streaming state, kept by the caller's closure
fn poll_response(
    cx: &mut Context<'_>,
    stream: &Arc<TcpStream>,
    body: &mut Body,
    framing: Framing,
    pending: &mut Vec<u8>,
    out: &mut Out,
    ended: &mut bool,
    sink: &mut bool,
) -> Poll<Result<(), ()>> {
    loop {
        if !out.is_empty() {
            match out.poll_write(cx, stream) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending => {
                    body.set_stalled();
                    if probe(cx, stream, pending).is_err() {
                        return Poll::Ready(Err(()));
                    }
                    return Poll::Pending;
                }
            }
        }
        if *ended {
            return Poll::Ready(Ok(()));
        }
        if probe(cx, stream, pending).is_err() {
            return Poll::Ready(Err(()));
        }
        if !*sink {
            *sink = true;
            if matches!(framing, Framing::Chunked | Framing::Close) {
                body.attach_sink(stream, framing == Framing::Chunked);
            }
        }
        match body.poll_wire(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                *ended = true;
                if framing == Framing::Chunked {
                    out.set_end();
                }
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(())),
            Poll::Ready(Some(Ok((data, false)))) => out.set_data(framing, data),
            Poll::Ready(Some(Ok((data, true)))) => out.set_data(Framing::Close, data),
        }
    }
}

/// Reads what the client sent meanwhile into `pending` (up to a bound, then it is left in
/// the socket). `Err` at EOF or on an error: the client is gone.
fn probe(cx: &mut Context<'_>, stream: &TcpStream, pending: &mut Vec<u8>) -> Result<(), ()> {
    while pending.len() < MAX_PIPELINED {
        match stream.poll_read_ready(cx) {
            Poll::Pending => break,
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Ready(Ok(())) => {}
        }
        let mut buf = [0u8; PROBE];
        match stream.try_read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            // Readiness was cleared: polling it again registers for the next.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Bytes on their way to the socket: the response head (once), a chunk-size line, the
/// data and what follows it (the chunk's CRLF, or the last chunk).
struct Out {
    head: Vec<u8>,
    data: Bytes,
    written: usize,
    size: [u8; 18],
    size_len: u8,
    tail: Tail,
}

/// What follows the data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    None,
    /// The CRLF ending a chunk.
    Crlf,
    /// The last chunk.
    End,
    /// Both.
    CrlfEnd,
}

impl Tail {
    fn bytes(self) -> &'static [u8] {
        match self {
            Tail::None => b"",
            Tail::Crlf => b"\r\n",
            Tail::End => END,
            Tail::CrlfEnd => b"\r\n0\r\n\r\n",
        }
    }
}

impl Out {
    fn new(head: Vec<u8>) -> Self {
        Out {
            head,
            size: [0; 18],
            size_len: 0,
            data: Bytes::new(),
            tail: Tail::None,
            written: 0,
        }
    }

    fn parts(&self) -> [&[u8]; 4] {
        [
            &self.head,
            &self.size[..usize::from(self.size_len)],
            &self.data,
            self.tail.bytes(),
        ]
    }

    fn is_empty(&self) -> bool {
        self.parts().iter().map(|p| p.len()).sum::<usize>() == self.written
    }

    /// Queues a data frame (after the head, if that is still unsent).
    fn set_data(&mut self, framing: Framing, data: Bytes) {
        if data.is_empty() {
            return; // an empty chunk would read as the end of the body
        }
        if framing == Framing::Chunked {
            let mut line = [0; 18];
            let line = crate::stream::chunk_size_line(data.len(), &mut line);
            self.size[..line.len()].copy_from_slice(line);
            self.size_len = line.len() as u8;
            self.tail = Tail::Crlf;
        }
        self.data = data;
    }

    /// Queues the last chunk (after whatever is queued).
    fn set_end(&mut self) {
        self.tail = if self.tail == Tail::None {
            Tail::End
        } else {
            Tail::CrlfEnd
        };
    }

    /// Writes everything queued, with vectored writes; then frees it.
    fn poll_write(&mut self, cx: &mut Context<'_>, stream: &TcpStream) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            let parts = self.parts();
            let mut slices = [IoSlice::new(&[]); 4];
            let mut used = 0;
            let mut skip = self.written;
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[used] = IoSlice::new(&part[skip..]);
                skip = 0;
                used += 1;
            }
            if used == 0 {
                *self = Out::new(Vec::new());
                return Poll::Ready(Ok(()));
            }
            let left: usize = slices[..used].iter().map(|s| s.len()).sum();
            let n = if used > 1 && left <= SMALL_WRITE {
                // A small frame (an event: size line, data, CRLF) is copied into one buffer
                // and sent with one `write`: cheaper in the kernel than a `writev` of three.
                SCRATCH.with_borrow_mut(|buf| {
                    buf.clear();
                    for s in &slices[..used] {
                        buf.extend_from_slice(s);
                    }
                    stream.try_write(buf)
                })
            } else {
                stream.try_write_vectored(&slices[..used])
            };
            let n = match n {
                Ok(n) => n,
                // Readiness was cleared: polling it again registers for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
    }
}

/// True when the response asks for the connection to close.
fn asks_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The status line and headers, with `date` and the framing header.
fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    (framing, length): (Framing, u64),
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        96 + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>(),
    );
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue; // the engine frames the body itself
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|(secs, text)| {
            // Formatted once a second per thread, as hyper does.
            let now = SystemTime::now();
            let s = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if *secs != s || text.is_empty() {
                *secs = s;
                *text = httpdate::fmt_http_date(now);
            }
            out.extend_from_slice(text.as_bytes());
        });
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !keep_alive && version == Version::HTTP_11 && !headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
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

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::server::ServerConfig;

    #[tokio::test]
    async fn a_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (stream, _) = accepted.unwrap();
        let shared = Arc::new(Shared::new(App::new(), ServerConfig::default()));
        let peer = stream.peer_addr().unwrap();
        let task = connection(stream, Box::new(peer), shared);
        let size = std::mem::size_of_val(&task);
        // 408 bytes in release builds with Rust 1.95 (hyper's two buffers alone are 16 KiB),
        // 16 of them for the boxed peer address (moved into the inner future, its slot kept
        // in this one): it saves a getpeername syscall per request. tokio's task cell adds
        // 112 bytes (its header, trailer, the tracker's token) and is aligned to 128: the
        // cell is 640 bytes up to 528, 768 past it.
        println!("connection task future: {size} bytes");
        assert!(size <= 528, "the connection future is {size} bytes");
        drop(client);
    }
}
