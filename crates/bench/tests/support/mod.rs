//! What the rat-bench integration tests share: the options of their long-lived routes, the
//! bench server's routes, a publisher stamping events as the bench servers do, and running
//! the rat-bench binary for its JSON. Not every test file uses every piece.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::{App, Channel, Event, RouteOptions};
use serde_json::Value;

/// A long-lived stream route.
pub const LONG: RouteOptions = RouteOptions {
    stream_body: false,
    body_limit: None,
    long_lived: true,
    stream: true,
    max_streams: None,
    cors: rat_engine::cors::RouteCors::Inherit,
    compress: rat_engine::compress::RouteCompression::Inherit,
};

/// [`rat_bench`] from an async test, on a blocking thread (the server under test runs on the
/// same runtime).
pub async fn run(args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rat_bench(&args)
    })
    .await
    .unwrap()
}

/// A command line as owned strings, for [`run`].
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs rat-bench with `args` and returns the JSON it prints; fails the test if it fails.
pub fn rat_bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rat-bench"))
        .args(args)
        .output()
        .expect("run rat-bench");
    assert!(
        out.status.success(),
        "rat-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rat-bench prints JSON")
}

/// The routes rat-bench's `hello`, `broadcast` and `ws-broadcast` ask for: `/hello`, and
/// `channel` at `/sse/broadcast` and (WebSocket) `/ws/broadcast`.
pub fn bench_app(channel: &Channel) -> App {
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.route_with(
        Method::GET,
        "/sse/broadcast",
        Arc::new(channel.clone()),
        LONG,
    )
    .unwrap();
    app.ws_channel("/ws/broadcast", channel.clone()).unwrap();
    app
}

/// Publishes `{"seq":n,"t":<CLOCK_MONOTONIC ns>}` to every channel every 20 ms, the same
/// `seq` to each, until [`stop`](Self::stop).
pub struct Ticker {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub fn start(channels: Vec<Channel>) -> Ticker {
        let running = Arc::new(AtomicBool::new(true));
        let on = running.clone();
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            while on.load(SeqCst) {
                let t = rat_bench::sys::monotonic_ns();
                for ch in &channels {
                    let _ = ch.publish(Event::data_only(format!("{{\"seq\":{seq},\"t\":{t}}}")));
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ticker { running, task }
    }

    pub async fn stop(self) {
        self.running.store(false, SeqCst);
        self.task.await.unwrap();
    }
}
