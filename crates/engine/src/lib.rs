//! # rat-engine
//!
//! A streaming HTTP engine on hyper and tokio: Server-Sent Events framed per the WHATWG
//! spec, chunked / NDJSON / text / binary streams that really stream, bounded queues with
//! backpressure behind every streaming response, and broadcast channels with history and
//! `Last-Event-ID` replay. It is the core of the `rat-engine` Node.js package and usable
//! on its own from Rust.
//!
//! ```no_run
//! use std::time::Duration;
//! use rat_engine::{App, Event, Server, ServerConfig, Sse};
//! use tokio_stream::StreamExt as _;
//!
//! # async fn run() -> rat_engine::Result<()> {
//! let mut app = App::new();
//! app.get("/hello", |_req| async { "Hello, world!" })?;
//! app.get("/ticks", |_req| async {
//!     let ticks = tokio_stream::iter(1..=10)
//!         .map(|i| Event::new().event("tick").data(i.to_string()))
//!         .throttle(Duration::from_secs(1));
//!     Sse::new(ticks) // ends after the tenth tick; dropped if the client leaves first
//! })?;
//! let server = Server::bind("127.0.0.1:8080", app, ServerConfig::default()).await?;
//! let _ = tokio::signal::ctrl_c().await;
//! server.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! The pieces:
//!
//! - [`App`] holds the routes; a handler is any `async fn(Request) -> impl IntoResponse`
//!   (text, [`Json`] of any `Serialize` value, [`Html`], a status, a [`Response`]...).
//! - [`Server`] serves an app; [`ServerHandle::shutdown`] stops it gracefully.
//! - Server-Sent Events: [`Sse`] sends the events of a `Stream`; [`SseResponse`] gives
//!   producer tasks an [`SseSender`] into a bounded queue; [`Event`] builds one event.
//! - Byte streams: [`StreamingResponse`] (chunked, any content type), [`json_stream`]
//!   (NDJSON), [`text_stream`], [`binary_stream`], [`ChunkedResponse`].
//! - Broadcast: a [`Channel`] fans events out to its subscribers and replays what a
//!   reconnecting client missed.
//!
//! Runnable examples, one per feature, are in the crate's
//! [`examples/`](https://github.com/rat-engine/rat-engine/tree/main/crates/engine/examples)
//! directory (`cargo run -p rat-engine --example hello`): `hello`, `sse_generator`,
//! `channel_replay`, `chunked_download`, `graceful_shutdown`, and the larger
//! `streaming_demo` and `chat_demo`.

pub mod access;
mod app;
pub mod auth;
mod batch;
pub mod channel;
pub mod compress;
pub mod cors;
pub mod error;
#[doc(hidden)]
pub mod frontend;
#[cfg(test)]
mod fuzz;
mod metrics;
mod request;
pub mod response;
pub mod router;
mod server;
pub mod stream;
mod sys;
pub mod tls;
mod wire;
pub mod ws;

pub use app::{App, Handler, RouteOptions};
pub use channel::{
    Channel, ChannelMetrics, ChannelOptions, RedisConfig, RedisHub, RedisMetrics, SlowClient,
};
pub use error::{Error, Result};
pub use metrics::{Metrics, MetricsSnapshot};
pub use request::{BodyStream, Request};
pub use response::{Html, IntoResponse, Json, Response};
pub use router::{ParamKind, Params};
pub use server::{Server, ServerConfig, ServerHandle};
pub use stream::{
    binary_stream, json_stream, text_stream, Body, ChunkedResponse, Event, QueueLimits, ReadyState,
    Sse, SseItem, SseResponse, SseSender, StreamSender, StreamingResponse,
};
pub use tls::TlsConfig;

pub use bytes::Bytes;
pub use futures_util::future::BoxFuture;
pub use http;
