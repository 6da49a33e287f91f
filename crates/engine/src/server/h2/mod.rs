//! HTTP/2 connections served with the `h2` crate: over TLS with ALPN `h2`, and plaintext
//! ones that open with HTTP/2's preface (h2c with prior knowledge, handed over by the
//! direct path).
//!
//! The engine holds each stream's send half ([`H2Out`](crate::wire::h2::H2Out)), so a
//! stream body's producers send its DATA frames themselves while the stream has send
//! capacity (a channel's sweep writes an event to each subscriber's stream without waking
//! its task); the connection's task encodes and writes what all its streams sent. Each
//! request runs in a task of its own (`respond`): the edge's checks and the handler
//! (`service::handle`, shared with hyper's connections), the response head, then its body
//! as flow control allows.

mod respond;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::activity::Activity;
use super::{Shared, IDLE_CLOSE_GRACE};

/// The connection settings hyper's HTTP/2 server uses (hyper 1.x defaults): 1 MiB
/// windows, 16 KiB frames, 200 concurrent streams, 400 KiB of buffered send data per
/// stream, 16 KiB of headers; and extended CONNECT (RFC 8441), for WebSockets.
pub(crate) fn builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.enable_connect_protocol();
    b.initial_window_size(1024 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_concurrent_streams(200)
        .max_local_error_reset_streams(Some(1024))
        .max_send_buffer_size(400 * 1024);
    b
}

#[allow(clippy::large_enum_variant)] // a local of the connection loop, moved once
enum Event {
    Stream(
        http::Request<h2::RecvStream>,
        h2::server::SendResponse<Bytes>,
    ),
    /// Nothing in flight for the idle timeout.
    Idle,
    /// The server shuts down.
    Shutdown,
    /// The connection is over (closed, failed, or dropped).
    Done,
}

/// Serves one HTTP/2 connection until it closes: finishes it gracefully (GOAWAY, then the
/// streams in flight) at shutdown and once it has had nothing in flight for the idle
/// timeout, and drops it when the grace period is over.
pub(crate) async fn serve<I>(io: I, peer: SocketAddr, shared: &Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    // Made once: a waiter registers with the shutdown when first polled, not per event.
    let mut begun = std::pin::pin!(shared.shutdown.begun());
    let mut forced = std::pin::pin!(shared.shutdown.forced());
    let idle = shared.config.idle_timeout;
    let start = Instant::now();
    let handshake = shared.h2.handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        c = handshake => match c {
            Ok(c) => c,
            Err(_) => return,
        },
        _ = activity.idle_for(idle, start) => return,
        _ = begun.as_mut() => return,
    };
    // Set once a GOAWAY is sent; for an idle connection, when.
    let mut closing = false;
    let mut idle_since: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => Event::Stream(req, respond),
                _ => Event::Done,
            },
            _ = activity.idle_for(idle, start), if !closing => Event::Idle,
            _ = begun.as_mut(), if !closing => Event::Shutdown,
            // A client that does not answer the GOAWAY's ping (or sent only the preface) is
            // not waited for once the connection has been quiet a moment more.
            _ = activity.idle_for(IDLE_CLOSE_GRACE, idle_since.unwrap_or(start)), if idle_since.is_some() => Event::Done,
            _ = forced.as_mut() => Event::Done,
        };
        match event {
            Event::Stream(req, respond) => {
                let busy = activity.begin();
                tokio::spawn(respond::stream(shared.clone(), peer, busy, req, respond));
            }
            Event::Idle => {
                conn.graceful_shutdown();
                closing = true;
                idle_since = Some(Instant::now());
            }
            Event::Shutdown => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Done => break,
        }
    }
}

#[cfg(test)]
mod tests;
