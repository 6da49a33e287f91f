//! Streaming responses: the body type, the bounded queue behind it, SSE framing, and
//! chunked and NDJSON/text/binary helpers.

mod body;
mod chunked;
pub(crate) mod queue;
pub(crate) mod responder;
pub mod sse;

pub use body::Body;
pub(crate) use body::HEARTBEAT;
pub use chunked::{binary_stream, json_stream, text_stream, ChunkedResponse, StreamingResponse};
pub(crate) use queue::{Pushed, WeakSender};
pub use queue::{QueueLimits, ReadyState, StreamSender, DEFAULT_HIGH_WATER_MARK, MAX_VECTORED};
pub use sse::{Event, Sse, SseItem, SseResponse, SseSender};
