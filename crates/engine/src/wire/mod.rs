//! The bytes of an HTTP/1.1 response the engine writes itself: where each byte on the
//! wire is decided.
//!
//! - [`head`]: the status line and headers, the framing a response gets ([`Framing`]) and
//!   whether its connection is kept.
//! - [`chunk`]: chunked transfer coding, the one implementation every writer uses.
//! - [`sink`]: a connection's socket lent to a stream's producers, who write their bytes
//!   to it themselves while the connection has nothing of theirs left to write.
//! - [`tls`]: TLS sessions whose buffers the engine owns, for the direct path and HTTP/2.
//! - [`h2`]: an HTTP/2 stream's send half, which a sink may also be.
//!
//! A stream's bytes always go through its queue ([`crate::stream`]), which hands them to
//! the connection as [`Chunk`]s: the direct HTTP/1.1 path frames and writes them, hyper
//! (HTTP/1.1 for everything else, HTTP/2, TLS) takes them as body frames. Streams and
//! channels never frame bytes or touch sockets: the queue offers a write to the sink the
//! connection attached, if any, and the sink frames it.

pub(crate) mod chunk;
pub(crate) mod conn;
pub(crate) mod h2;
pub(crate) mod head;
pub(crate) mod sink;
pub(crate) mod tls;

use bytes::Bytes;

pub(crate) use conn::Conn;
pub(crate) use head::Framing;
pub(crate) use sink::{Sink, Wrote};

/// Bytes a stream's queue hands to its connection.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Payload: the connection frames it (a chunk on HTTP/1.1, a DATA frame on HTTP/2).
    Data(Bytes),
    /// What the socket did not take of a write a producer made through the [`Sink`],
    /// already framed: written as is. Only on a connection that attached a sink.
    Framed(Bytes),
}

impl Chunk {
    /// The bytes, framed or not.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Chunk::Data(b) | Chunk::Framed(b) => b,
        }
    }
}
