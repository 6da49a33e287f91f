//! Writing a response on the direct path: its head, then its body's chunks as they come,
//! while watching the socket for a client that leaves.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use crate::server::Shared;
use crate::stream::Body;
use crate::wire::chunk::{SizeLine, Tail};
use crate::wire::{head, Chunk, Conn, Framing};

/// Bytes of pipelined requests kept while a response streams; past it the socket is not
/// read until the response is done.
const MAX_PIPELINED: usize = 16 * 1024;

/// Readies a response for the wire: its framing, whether the connection is kept, its
/// head queued (with the first frame when one is ready: a full body, or a stream whose
/// producer already queued something). `None` if the body failed at once.
pub(super) fn start(
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
    let framing = Framing::of(status, body.is_streaming(), version);
    if framing == Framing::None {
        body = Body::empty();
    }
    let keep_alive = keep_alive
        && shared.config.keep_alive
        && framing.allows_keep_alive()
        && !head::asks_close(&head.headers)
        && !shared.shutdown.is_begun();
    let length = body.size_hint().exact().unwrap_or(0);
    let mut out = Out::new(head::encode(
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
pub(super) fn poll_response(
    cx: &mut Context<'_>,
    stream: &Arc<Conn>,
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
            // Over TLS only on Unix, where a sink sends on the descriptor it keeps.
            let can = cfg!(unix) || stream.plain_tcp().is_some();
            if matches!(framing, Framing::Chunked | Framing::Close) && can {
                body.attach_sink(stream, framing);
            }
        }
        // What a sink left sealed in a TLS session goes out before the next chunk.
        match stream.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
            Poll::Pending => {
                body.set_stalled();
                return Poll::Pending;
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
            Poll::Ready(Some(Ok(Chunk::Data(data)))) => out.set_data(framing, data),
            // Framed by the sink: written as is.
            Poll::Ready(Some(Ok(Chunk::Framed(data)))) => out.set_data(Framing::Close, data),
        }
    }
}

/// Hands the connection to the WebSocket a 101 response upgrades it to: the socket's task
/// writes the head first, then serves the socket, the bytes read after the request
/// (`pending`) first. The direct path is over for this connection.
pub(super) fn upgrade(
    stream: &Arc<Conn>,
    shared: &Shared,
    res: crate::Response,
    up: crate::ws::Taken,
    pending: &mut Vec<u8>,
) {
    let head = head::encode(
        Version::HTTP_11,
        res.status(),
        res.headers(),
        (Framing::None, 0),
        true,
    );
    let unread = Bytes::from(std::mem::take(pending));
    up.spawn(stream.clone(), Bytes::from(head), unread, shared);
}

/// Reads what the client sent meanwhile into `pending` (up to a bound, then it is left in
/// the socket). `Err` at EOF or on an error: the client is gone.
pub(super) fn probe(cx: &mut Context<'_>, stream: &Conn, pending: &mut Vec<u8>) -> Result<(), ()> {
    stream.poll_read_into(cx, pending, MAX_PIPELINED)
}

/// Bytes on their way to the socket: the response head (once), a chunk-size line, the
/// data and what follows it (the chunk's CRLF, or the last chunk).
pub(super) struct Out {
    head: Vec<u8>,
    data: Bytes,
    written: usize,
    size: SizeLine,
    tail: Tail,
}

impl Out {
    fn new(head: Vec<u8>) -> Self {
        Out {
            head,
            size: SizeLine::NONE,
            data: Bytes::new(),
            tail: Tail::None,
            written: 0,
        }
    }

    fn parts(&self) -> [&[u8]; 4] {
        [
            &self.head,
            self.size.as_bytes(),
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
            self.size = SizeLine::new(data.len());
            self.tail = Tail::Crlf;
        }
        self.data = data;
    }

    /// Queues the last chunk (after whatever is queued).
    fn set_end(&mut self) {
        self.tail = self.tail.then_last();
    }

    /// Writes everything queued, with vectored writes; then frees it.
    fn poll_write(&mut self, cx: &mut Context<'_>, stream: &Conn) -> Poll<io::Result<()>> {
        loop {
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
                // Emptied before the flush: a flush that waits must not leave written
                // bytes counted against the next frame.
                *self = Out::new(Vec::new());
                std::task::ready!(stream.poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            let n = std::task::ready!(stream.poll_write(cx, &slices[..used]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
    }
}
