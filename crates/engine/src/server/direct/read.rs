//! Reading a request head on the direct path and deciding who serves it: the direct path
//! (a plain `GET` of a long-lived route), hyper (everything else), or nobody (a head past
//! a limit, refused).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::time::Instant;

use super::respond::{poll_response, start};
use crate::app::Route;
use crate::metrics::Metrics;
use crate::router::{Params, RouteMatch};
use crate::server::{service, Shared};
use crate::wire::Conn;

/// The first read of a request head. Just under 1 KiB: glibc's malloc (a Rust program's
/// default; the Node addon uses mimalloc) serves 1 KiB and up from its large bins, and
/// each such request first consolidates the fast bins (~1% of a small request's CPU).
const FIRST_READ: usize = 1000;
/// A head not complete within this many bytes goes to hyper (which answers it per its
/// own limits).
const MAX_HEAD: usize = 16 * 1024;
/// Header lines parsed here; more go to hyper.
pub(super) const MAX_HEADERS: usize = 64;

pub(super) enum HeadRead<'a> {
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
pub(super) async fn read_head<'a>(
    stream: &Arc<Conn>,
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
        let grow = |buf: &mut Vec<u8>| {
            if buf.len() == buf.capacity() {
                let more = if buf.is_empty() {
                    FIRST_READ
                } else {
                    buf.len()
                };
                buf.reserve_exact(more.min(MAX_HEAD - buf.len()));
            }
        };
        tokio::select! {
            biased;
            // Woken by the connection task's `forced()` (see `connection`).
            _ = shared.shutdown.begun_seen() => return HeadRead::Closed,
            r = stream.read(&mut buf, grow) => if !matches!(r, Ok(1..)) { return HeadRead::Closed },
            _ = tokio::time::sleep_until(deadline) => {
                if !idle {
                    Metrics::add(&shared.metrics.header_timeouts, 1);
                }
                return HeadRead::Closed;
            }
        }
    }
}

/// A request served directly.
pub(super) struct DirectRequest<'a> {
    pub(super) head_len: usize,
    pub(super) peer: SocketAddr,
    pub(super) parts: http::request::Parts,
    pub(super) route: &'a Route,
    pub(super) params: Params,
    /// The client allows the connection to be reused (HTTP/1.1 without `close`).
    pub(super) keep_alive: bool,
    /// A WebSocket upgrade (`Upgrade: websocket`, `Connection: upgrade`).
    pub(super) upgrade: bool,
}

pub(super) enum Parse<'a> {
    Partial,
    Handover,
    Refuse(StatusCode, String),
    Direct(Box<DirectRequest<'a>>),
}

/// Parses a head and decides whether it is served here: a complete HTTP/1.x `GET` in
/// origin form, without a body or expectation, and without an upgrade other than to a
/// WebSocket, for a long-lived route. A head or target past the server's limits is
/// refused (431, 414), whatever serves it.
pub(super) fn parse<'a>(buf: &[u8], peer: SocketAddr, shared: &'a Shared) -> Parse<'a> {
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
    // An `Upgrade` header or a `Connection: upgrade` (checked whole below).
    let mut upgrade = false;
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
        } else if name == header::TRANSFER_ENCODING || name == header::EXPECT {
            return Parse::Handover;
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
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
    if upgrade && (version != Version::HTTP_11 || !crate::ws::is_upgrade(&map)) {
        return Parse::Handover;
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
        upgrade,
    }))
}

fn head_too_large<'a>(max: usize) -> Parse<'a> {
    let msg = format!("the request head is larger than {max} bytes");
    Parse::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, msg)
}

/// Answers a request refused before it was parsed in full (`status`, a JSON body) and
/// ends the connection.
async fn refuse(
    stream: &Arc<Conn>,
    shared: &Shared,
    status: StatusCode,
    msg: &str,
    pending: &mut Vec<u8>,
) {
    Metrics::add(&shared.metrics.total_requests, 1);
    let res = service::closing(service::rejected(&shared.metrics, status, msg));
    shared.metrics.count_response(status);
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
