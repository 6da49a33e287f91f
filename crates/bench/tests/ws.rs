//! `ws-broadcast` against the engine's channel over WebSocket: every event counted with its
//! sequence, and its latency taken both when read and on arrival (kernel stamps), as the
//! SSE `broadcast` does.
#![cfg(unix)]

mod support;

use rat_engine::{Channel, ChannelOptions, Server, ServerConfig};
use support::{args, bench_app, run, Ticker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_broadcast_counts_events_and_stamps_their_arrival() {
    let channel = Channel::new("ws", ChannelOptions::default());
    let config = ServerConfig::default().heartbeat(None);
    let server = Server::bind("127.0.0.1:0", bench_app(&channel), config)
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let ticker = Ticker::start(vec![channel.clone()]);
    let cmd = args(&[
        "ws-broadcast",
        "--addr",
        &addr,
        "--connections",
        "20",
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--connect-timeout",
        "10",
    ]);
    let r = run(cmd).await;
    ticker.stop().await;
    println!("{r}");
    assert_eq!(r["connected"], 20, "{r}");
    assert_eq!((&r["gaps"], &r["lost"]), (&0.into(), &0.into()), "{r}");
    assert_eq!(
        (&r["out_of_order"], &r["unparsable"]),
        (&0.into(), &0.into()),
        "{r}"
    );
    // Every event's read brought a kernel stamp, none later than its read.
    assert_eq!(
        (&r["unstamped_events"], &r["clock_skew"]),
        (&0.into(), &0.into()),
        "{r}"
    );
    let events = r["events"].as_u64().unwrap();
    // 1.5 s at one publish per 20 ms to 20 subscribers: about 1,500.
    assert!(events >= 20 * 40, "{r}");
    assert_eq!(r["arrival_latency"]["count"], events, "{r}");
    assert_eq!(r["subscribers_without_events"], 0, "{r}");
    let p99 = |k: &str| r[k]["p99_ms"].as_f64().unwrap();
    assert!(p99("arrival_latency") <= p99("latency"), "{r}");
}
