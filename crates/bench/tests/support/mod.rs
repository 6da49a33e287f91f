//! What the rat-bench integration tests share: the options of their long-lived routes, and
//! running the rat-bench binary for its JSON.

use std::process::Command;

use rat_engine::RouteOptions;
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
