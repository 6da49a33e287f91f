//! `rat-bench` over TLS against a rat-engine server in this process: `cert` writes a pair
//! the engine accepts, `hello --tls http1` reads whole responses, and `broadcast` counts
//! every event with its latency (on read and on arrival) over TLS HTTP/1.1 (a connection per subscriber) and over
//! h2 (many streams per connection), with no gaps.
#![cfg(unix)]

mod support;

use std::process::Command;
use std::time::Duration;

use rat_engine::{Channel, ChannelOptions, Server, ServerConfig, TlsConfig};
use support::{args, bench_app, run, Ticker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_broadcast_over_tls_http1_and_h2() {
    let dir = std::env::temp_dir().join(format!("rat-bench-tls-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rat-bench"))
        .args(["cert", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read(dir.join("cert.pem")).unwrap();
    let key = std::fs::read(dir.join("key.pem")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let tls = TlsConfig::from_pem(&cert, &key, None).unwrap();

    let channel = Channel::new("broadcast", ChannelOptions::default());
    let config = ServerConfig::default().heartbeat(None).tls(tls);
    let server = Server::bind("127.0.0.1:0", bench_app(&channel), config)
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let ticker = Ticker::start(vec![channel.clone()]);

    let hello = run(args(&[
        "hello",
        "--tls",
        "http1",
        "--addr",
        &addr,
        "--connections",
        "4",
        "--warmup",
        "0.2",
        "--duration",
        "1",
    ]))
    .await;
    println!("hello: {hello}");
    assert!(hello["requests"].as_u64().unwrap() > 100, "{hello}");
    assert_eq!(hello["errors"], 0, "{hello}");
    assert_eq!(hello["reconnects"], 0, "{hello}");

    // 50 subscribers: over h2, 4 connections of 15 streams, the last one with 5.
    for extra in [
        &["--tls", "http1"][..],
        &["--tls", "h2", "--streams-per-conn", "15"],
    ] {
        let mut a = args(&[
            "broadcast",
            "--addr",
            &addr,
            "--connections",
            "50",
            "--warmup",
            "0.5",
            "--duration",
            "1.5",
            "--connect-timeout",
            "10",
        ]);
        a.extend(args(extra));
        let b = run(a).await;
        println!("broadcast {extra:?}: {b}");
        assert_eq!(b["connected"], 50, "{b}");
        assert_eq!(
            b["connections"],
            if extra.contains(&"h2") { 4 } else { 50 },
            "{b}"
        );
        assert_eq!(b["gaps"], 0, "{b}");
        assert_eq!(b["lost"], 0, "{b}");
        assert_eq!(b["unparsable"], 0, "{b}");
        assert_eq!(b["subscribers_without_events"], 0, "{b}");
        // ~75 publishes in the window reach all 50 (one at the window's edge may fall
        // inside it for some subscribers and outside for others).
        let publishes = b["publishes_seen"].as_u64().unwrap();
        assert!(publishes >= 40, "{b}");
        assert!(
            b["events_per_subscriber_min"].as_u64().unwrap() + 1 >= publishes,
            "{b}"
        );
        let read = b["latency"]["p50_ms"].as_f64().unwrap();
        let arrival = b["arrival_latency"]["p50_ms"].as_f64().unwrap();
        assert!(read > 0.0, "{b}");
        // Every read carried the kernel's receive timestamp, never later than the read.
        assert_eq!(b["unstamped_events"], 0, "{b}");
        assert_eq!(b["clock_skew"], 0, "{b}");
        assert!(arrival > 0.0 && arrival <= read, "{b}");
    }

    // A scenario that reads HTTP/1.1 by hand refuses h2.
    let out = Command::new(env!("CARGO_BIN_EXE_rat-bench"))
        .args(["hello", "--tls", "h2", "--addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls h2"));

    ticker.stop().await;
    server.shutdown(Duration::from_secs(1)).await;
}
