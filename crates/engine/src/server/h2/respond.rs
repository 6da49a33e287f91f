//! One HTTP/2 stream: its request answered (the service shared with hyper's connections),
//! the response head, then its body as the stream's flow control allows, until the body
//! ends or the client resets the stream.
//!
//! A WebSocket's extended CONNECT (RFC 8441, `:protocol websocket`) reaches the routes as
//! a GET with `Upgrade: websocket`, the form an HTTP/1.1 upgrade has (a header HTTP/2
//! clients cannot send: h2 refuses it as malformed), and version HTTP/2; a route that
//! accepts it answers 200, and the stream then carries the socket.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::Body as _;

use crate::request::RequestBody;
use crate::server::activity::Busy;
use crate::server::{service, Shared};
use crate::stream::Body;
use crate::wire::h2::H2Out;
use crate::wire::Chunk;

/// Answers one request. A client that resets the stream while its handler runs drops the
/// handler's future (a front end sees the request closed); one that resets it while the
/// body streams drops the body (its producers see the stream closed).
///
/// The request's part (the request, the handler's future) is boxed and freed once the head
/// is sent: the task keeps only the state it streams in, which an idle subscriber pays for.
pub(super) fn stream(
    shared: Arc<Shared>,
    peer: SocketAddr,
    busy: Busy,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> impl Future<Output = ()> + Send {
    let head = Box::pin(answer(shared, peer, req, respond));
    async move {
        match head.await {
            Some(Answered::Body(body, send)) => send_body(body, send).await,
            // The socket's task holds the connection busy until the socket closes.
            Some(Answered::WebSocket(open)) => open(busy),
            None => {}
        }
    }
}

/// What follows a request's answer on its stream.
enum Answered {
    /// A body to send.
    Body(Body, h2::SendStream<Bytes>),
    /// A WebSocket to start, given what keeps the connection busy while it is open.
    WebSocket(Box<dyn FnOnce(Busy) + Send>),
}

/// Whether `req` is a WebSocket's extended CONNECT (RFC 8441).
fn is_ws_connect(req: &http::Request<RecvStream>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The request answered and the response head sent: the body and the stream to send it
/// on, or the WebSocket the stream now carries; `None` when the response has no body (or
/// the client reset the stream).
async fn answer(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Option<Answered> {
    let log = shared.config.access_log.as_ref();
    let pending =
        crate::access::Pending::new(log, req.method(), req.uri(), req.headers(), Some(peer));
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut socket_recv = None;
    let req = if is_ws_connect(&req) {
        let (mut parts, recv) = req.into_parts();
        parts.method = Method::GET;
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        socket_recv = Some(recv);
        http::Request::from_parts(parts, RequestBody::Empty)
    } else {
        req.map(|recv| RequestBody::H2 { recv, length })
    };
    let answer = service::handle(shared.clone(), peer, req);
    let mut res = tokio::select! {
        res = answer => res,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return None,
    };
    let upgrade = match socket_recv {
        Some(_) => crate::ws::take_upgrade(&mut res),
        None => None,
    };
    if socket_recv.is_some() && upgrade.is_none() && res.status().is_success() {
        // A 2xx would open a tunnel the client reads as WebSocket frames.
        res = crate::response::error(
            StatusCode::BAD_REQUEST,
            "this route takes no WebSocket upgrades",
        );
    }
    shared.metrics.count_response(res.status());
    if let Some(p) = pending {
        p.finish(shared.config.access_log.as_ref(), &res);
    }
    if let (Some(recv), Some(upgrade)) = (socket_recv, upgrade) {
        let (mut head, _) = head_of(res);
        // The stream's DATA is the socket's, not a body of the length the 200 has.
        head.headers_mut().remove(header::CONTENT_LENGTH);
        return match respond.send_response(head, false) {
            Ok(send) => Some(Answered::WebSocket(Box::new(move |busy| {
                upgrade.spawn_h2(recv, send, busy, &shared)
            }))),
            Err(_) => {
                upgrade.gone();
                None
            }
        };
    }
    let (head, body) = head_of(res);
    let end = body.is_end_stream();
    let send = respond.send_response(head, end).ok()?;
    (!end).then_some(Answered::Body(body, send))
}

/// The response head as HTTP/2 carries it, and its body: a 1xx becomes a 500 (as on the
/// direct path); headers only HTTP/1.1 has are left out (h2 refuses them); `content-length`
/// for a body of known size and `date` unless the handler set them (as hyper does).
fn head_of(res: crate::Response) -> (http::Response<()>, Body) {
    let (mut parts, mut body) = res.into_parts();
    if parts.status.is_informational() {
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        body = Body::empty();
    }
    strip_connection_headers(&mut parts.headers);
    if let Some(len) = body.size_hint().exact() {
        if !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        let date = crate::wire::head::with_date(|d| HeaderValue::from_str(d).ok());
        if let Some(date) = date {
            parts.headers.insert(header::DATE, date);
        }
    }
    (http::Response::from_parts(parts, ()), body)
}

/// RFC 9113 §8.2.2: connection-specific header fields are not sent over HTTP/2.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Sends a body's frames as the stream's capacity allows, until it ends (then the end of
/// the stream), fails (the stream is reset) or the client resets the stream. A stream
/// body's producers send through the stream themselves whenever nothing of theirs is left
/// here (see [`crate::wire::h2`]).
///
/// Not an `async fn`, which would keep its arguments twice (as captured and as locals).
#[allow(clippy::manual_async_fn)] // not an `async fn`: see above
fn send_body(mut body: Body, send: h2::SendStream<Bytes>) -> impl Future<Output = ()> + Send {
    async move {
        let out = Arc::new(H2Out::new(send));
        if body.is_streaming() {
            body.report_stalls();
            body.attach_h2(&out);
        }
        let mut pending = Bytes::new();
        poll_fn(|cx| poll_send(cx, &mut body, &out, &mut pending)).await;
    }
}

/// Ready when the stream is done, one way or another.
fn poll_send(cx: &mut Context<'_>, body: &mut Body, out: &H2Out, pending: &mut Bytes) -> Poll<()> {
    loop {
        {
            let mut send = out.lock();
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            while !pending.is_empty() {
                let capacity = send.capacity();
                if capacity == 0 {
                    send.reserve_capacity(pending.len());
                    match send.poll_capacity(cx) {
                        Poll::Pending => {
                            drop(send);
                            body.set_stalled();
                            // A producer that fails the stream meanwhile (a broadcast's
                            // policy closing a client that does not read) resets it.
                            if body.poll_failed(cx) {
                                out.lock().send_reset(Reason::INTERNAL_ERROR);
                                return Poll::Ready(());
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(_) => return Poll::Ready(()),
                    }
                }
                let part = pending.split_to(capacity.min(pending.len()));
                if send.send_data(part, false).is_err() {
                    return Poll::Ready(());
                }
            }
        }
        match body.poll_wire(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(Chunk::Data(data) | Chunk::Framed(data)))) => *pending = data,
            Poll::Ready(None) => {
                let _ = out.lock().send_data(Bytes::new(), true);
                return Poll::Ready(());
            }
            Poll::Ready(Some(Err(_))) => {
                out.lock().send_reset(Reason::INTERNAL_ERROR);
                return Poll::Ready(());
            }
        }
    }
}
