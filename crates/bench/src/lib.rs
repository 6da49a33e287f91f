//! Benchmark tools for rat-engine: the `rat-bench` load client (one core, raw TCP, a
//! hand-rolled HTTP/SSE reader) and the `rat-floor` server (the least a server can do on
//! one core). See docs/benchmarks.md and the runner in bench/run.mjs.
//!
//! Unix only: on other systems the library is empty and the binaries exit with a message.
#![cfg(unix)]

pub mod client;
pub mod http;
pub mod query;
pub mod sse;
pub mod stats;
pub mod sys;
pub mod tls;
