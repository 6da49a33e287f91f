//! Plumbing for front ends that run handlers outside Rust (the Node.js binding): a route's
//! [`Responder`] answers from another thread while the connection waits on a
//! [`PendingResponse`], and a [`Batch`] carries requests and wake-ups to a single-threaded
//! consumer such as a JS event loop.
//!
//! A Rust application does not need any of this: its handlers return an
//! [`IntoResponse`](crate::IntoResponse) (for streams, an [`SseResponse`](crate::SseResponse),
//! an [`Sse`](crate::Sse) or a [`StreamingResponse`](crate::StreamingResponse)).

pub use crate::batch::Batch;
pub use crate::stream::responder::{PendingResponse, Prepared, Responder, ResponseKind};
pub use crate::stream::ReadyState;
