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
//! use rat_engine::{App, Event, Server, ServerConfig, SseResponse};
//!
//! # async fn run() -> rat_engine::Result<()> {
//! let mut app = App::new();
//! app.get("/events", |_req| async {
//!     let sse = SseResponse::new();
//!     let tx = sse.sender();
//!     tokio::spawn(async move {
//!         for i in 0.. {
//!             let ev = Event::new().event("tick").data(i.to_string());
//!             if tx.send(&ev).await.is_err() { break } // client gone
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!         }
//!     });
//!     sse
//! })?;
//! let server = Server::bind("127.0.0.1:8080", app, ServerConfig::default()).await?;
//! # Ok(()) }
//! ```

pub mod access;
mod app;
pub mod auth;
mod batch;
pub mod channel;
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

pub use app::{App, Handler, RouteOptions};
pub use channel::{Channel, ChannelMetrics, ChannelOptions, SlowClient};
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
