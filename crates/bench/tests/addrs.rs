//! `broadcast --addr a,b`: one server in two processes (here two engines in this process,
//! each with its own channel and the same publishes) gets the subscribers in turn, and the
//! result counts each address's subscribers and events; a scenario that talks to one server
//! refuses several addresses.
#![cfg(unix)]

mod support;

use std::process::Command;

use rat_engine::{Channel, ChannelOptions, Server, ServerConfig, ServerHandle};
use support::{args, bench_app, run, Ticker};

async fn engine(channel: &Channel) -> ServerHandle {
    let config = ServerConfig::default().heartbeat(None);
    Server::bind("127.0.0.1:0", bench_app(channel), config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_spreads_subscribers_over_addresses() {
    let channels = [
        Channel::new("a", ChannelOptions::default()),
        Channel::new("b", ChannelOptions::default()),
    ];
    let a = engine(&channels[0]).await;
    let b = engine(&channels[1]).await;
    let addrs = format!("{},{}", a.local_addr(), b.local_addr());
    let ticker = Ticker::start(channels.to_vec());

    let cmd = args(&[
        "broadcast",
        "--addr",
        &addrs,
        "--connections",
        "21",
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
    assert_eq!(r["connected"], 21, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    let per = r["per_addr"].as_array().unwrap();
    assert_eq!(per.len(), 2, "{r}");
    assert_eq!(per[0]["addr"], a.local_addr().to_string(), "{r}");
    assert_eq!(per[1]["addr"], b.local_addr().to_string(), "{r}");
    assert_eq!(
        (&per[0]["connected"], &per[1]["connected"]),
        (&11.into(), &10.into()),
        "{r}"
    );
    // Each engine's subscribers got its events: the two together are all of them.
    let (ea, eb) = (
        per[0]["events"].as_u64().unwrap(),
        per[1]["events"].as_u64().unwrap(),
    );
    assert!(ea > 0 && eb > 0, "{r}");
    assert_eq!(ea + eb, r["events"].as_u64().unwrap(), "{r}");
    // And each engine handed its events to its own subscribers.
    for (ch, per) in channels.iter().zip(per) {
        assert!(
            ch.metrics().delivered >= per["events"].as_u64().unwrap(),
            "{r}"
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_rat-bench"))
        .args(["hello", "--addr", &addrs, "--duration", "0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one --addr only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
