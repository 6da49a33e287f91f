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
//! read them itself (h2c, HEAD, bodies, upgrades other than a WebSocket's, malformed
//! heads...). A WebSocket upgrade answered with 101 here, plain or TLS, leaves the
//! connection to its socket's task (see `ws`).

mod handover;
pub(crate) use handover::upgraded_tcp;
mod read;
mod respond;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use super::{service, Shared};
use crate::metrics::Metrics;
use crate::wire::Conn;
use handover::serve_handed_over;
#[cfg(test)]
use read::{parse, Parse, MAX_HEADERS};
use read::{read_head, DirectRequest, HeadRead};
use respond::{poll_response, probe, start};

/// hyper's auto builder, as the accept loop configures it.
pub(crate) type Builder = auto::Builder<TokioExecutor>;

/// Serves one accepted connection until it closes, counting it out of the active ones.
/// `peer` is the address accept gave (asking the socket costs a syscall per request),
/// boxed: 8 bytes in this task instead of 32 (see the size test).
///
/// This and the futures it awaits while streaming are `async move` blocks rather than
/// `async fn`s: an `async fn` keeps its arguments twice (as captured and as locals), and
/// this task's size is paid by every idle subscriber.
#[allow(clippy::manual_async_fn)] // not an `async fn`: see above
pub(crate) fn connection(
    stream: Conn,
    peer: Box<SocketAddr>,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Shared with the producers of a streaming response, which write to it themselves
        // while this task has nothing to write (see `Body::attach_sink`).
        let stream = Arc::new(stream);
        // `forced()` wakes this task when the shutdown begins too, which is what ends a
        // head read waiting on an idle keep-alive connection (`read_head`).
        let handover = tokio::select! {
            biased;
            _ = shared.shutdown.forced() => None,
            h = direct(&stream, peer, &shared) => h,
        };
        let metrics = shared.metrics.clone();
        // Sinks go with their bodies, so this task holds the only reference now.
        if let Ok(stream) = Arc::try_unwrap(stream) {
            match handover {
                // Boxed: this task's own state stays small while it serves directly.
                Some(prefix) => {
                    Box::pin(serve_handed_over(stream, Bytes::from(prefix), shared)).await
                }
                None => Box::pin(stream.shutdown()).await,
            }
        }
        Metrics::sub(&metrics.active_connections, 1);
    }
}

/// Serves requests directly while they qualify. Returns the bytes read but not served
/// when the connection goes to hyper, `None` once it is done (the caller shuts it down).
#[allow(clippy::manual_async_fn)] // see `connection`
fn direct<'a>(
    stream: &'a Arc<Conn>,
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
            if !serve(stream, shared, req, &mut pending).await || shared.shutdown.is_begun() {
                break;
            }
        }
        None
    }
}

/// Serves one request; true when the connection may carry another.
#[allow(clippy::manual_async_fn)] // see `connection`
fn serve<'a>(
    stream: &'a Arc<Conn>,
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
            let (version, keep_alive, upgrade) = (req.parts.version, req.keep_alive, req.upgrade);
            let log = shared.config.access_log.as_ref();
            let p = &req.parts;
            let access =
                crate::access::Pending::new(log, &p.method, &p.uri, &p.headers, Some(req.peer))
                    .map(Box::new);
            let Some(mut res) = until_gone(stream, pending, call(shared, req)).await else {
                return false;
            };
            shared.metrics.count_response(res.status());
            if let Some(a) = access {
                a.finish(log, &res);
            }
            if let Some(up) = upgrade.then(|| crate::ws::take_upgrade(&mut res)).flatten() {
                respond::upgrade(stream, shared, res, up, pending);
                return false;
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
    stream: &Conn,
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

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::server::ServerConfig;
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn a_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (stream, _) = accepted.unwrap();
        let shared = Arc::new(Shared::new(App::new(), ServerConfig::default()));
        let peer = stream.peer_addr().unwrap();
        let task = connection(Conn::plain(stream), Box::new(peer), shared);
        let size = std::mem::size_of_val(&task);
        // 512 bytes in release builds with Rust 1.95, 528 in debug builds (hyper's two
        // buffers alone are 16 KiB), 16 of them for the boxed peer address (moved into the
        // inner future, its slot kept in this one): it saves a getpeername syscall per
        // request. tokio's task cell adds 112 bytes (its header, trailer, the tracker's
        // token) and is aligned to 128: the cell is 640 bytes up to 528, 768 past it.
        println!("connection task future: {size} bytes");
        assert!(size <= 528, "the connection future is {size} bytes");
        drop(client);
    }
}
