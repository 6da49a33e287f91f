//! The soak and churn scenarios of `rat-bench`, CI-sized, against a rat-engine server in
//! this process: the same client code `npm run soak` runs at full scale against the Node
//! server (scripts/soak.mjs), here with a Rust publisher.
#![cfg(unix)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use rat_engine::{
    App, Channel, ChannelOptions, Event, Request, Server, ServerConfig, SseResponse,
    StreamingResponse,
};
use support::{rat_bench, LONG};

/// The channel's publisher: `{"n":k}` for k = 1, 2, ... until stopped.
struct Publisher {
    channel: Channel,
    /// The last k published, and whether publishing stopped (one lock for both).
    state: Mutex<(u64, bool)>,
}

impl Publisher {
    fn publish(&self) {
        let mut st = self.state.lock().unwrap();
        if st.1 {
            return;
        }
        let k = st.0 + 1;
        let id = self
            .channel
            .publish(Event::data_only(format!("{{\"n\":{k}}}")))
            .unwrap();
        assert!(id.ends_with(&format!("-{k}")), "{id}");
        st.0 = k;
    }

    fn stop(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.1 = true;
        st.0
    }
}

/// `/soak/channel`, `/soak/stop`, and the churn routes: `/churn/sse` (a producer task
/// that sends until its client leaves), `/churn/chunked` (the same, chunks),
/// `/churn/channel`.
fn app(publisher: Arc<Publisher>, churn: Channel) -> App {
    let mut app = App::new();
    app.route_with(
        Method::GET,
        "/soak/channel",
        Arc::new(publisher.channel.clone()),
        LONG,
    )
    .unwrap();
    let stop = move |_req: Request| {
        let last = publisher.stop();
        async move { rat_engine::Json(serde_json::json!({ "last": last })) }
    };
    app.get("/soak/stop", stop).unwrap();
    let sse = |_req: Request| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0u64.. {
                if tx.send(&Event::data_only(i.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        sse
    };
    app.route_with(Method::GET, "/churn/sse", Arc::new(sse), LONG)
        .unwrap();
    let chunked = |_req: Request| async {
        let (res, tx) = StreamingResponse::channel("text/plain", Default::default());
        tokio::spawn(async move {
            loop {
                if tx
                    .send(rat_engine::Bytes::from_static(b"chunk\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        res
    };
    app.route_with(Method::GET, "/churn/chunked", Arc::new(chunked), LONG)
        .unwrap();
    app.route_with(Method::GET, "/churn/channel", Arc::new(churn), LONG)
        .unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_subscribers_with_reconnects_lose_nothing_and_churn_leaves_nothing_behind() {
    let publisher = Arc::new(Publisher {
        channel: Channel::new("soak", ChannelOptions::default()),
        state: Mutex::new((0, false)),
    });
    let churn = Channel::new("churn", ChannelOptions::default());
    let config = ServerConfig::default().heartbeat(Some(Duration::from_millis(500)));
    let server = Server::bind("127.0.0.1:0", app(publisher.clone(), churn.clone()), config)
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let running = Arc::new(AtomicBool::new(true));
    let ticker = {
        let (publisher, running) = (publisher.clone(), running.clone());
        let churn = churn.clone();
        tokio::spawn(async move {
            while running.load(SeqCst) {
                publisher.publish();
                let _ = churn.publish(Event::data_only("churn"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let soak = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            rat_bench(&[
                "soak",
                "--addr",
                &addr,
                "--connections",
                "200",
                "--warmup",
                "0.5",
                "--duration",
                "3",
                "--reconnects-per-s",
                "40",
                "--reconnect-delay-ms",
                "300",
                "--settle",
                "10",
            ])
        })
        .await
        .unwrap()
    };
    println!("soak: {soak}");
    for key in [
        "lost",
        "duplicated",
        "out_of_order",
        "corrupt",
        "missed_notices",
        "server_closed",
    ] {
        assert_eq!(soak[key], 0, "{key}: {soak}");
    }
    assert_eq!(soak["subscribers_complete"], 200, "{soak}");
    assert!(soak["reconnects"].as_u64().unwrap() >= 60, "{soak}");
    assert!(soak["events"].as_u64().unwrap() >= 200 * 100, "{soak}");

    let cycles = 2000;
    let churned = tokio::task::spawn_blocking(move || {
        rat_bench(&[
            "churn",
            "--addr",
            &addr,
            "--cycles",
            &cycles.to_string(),
            "--concurrency",
            "32",
            "--paths",
            "/churn/sse,/churn/chunked,/churn/channel",
            "--early-percent",
            "20",
        ])
    })
    .await
    .unwrap();
    println!("churn: {churned}");
    assert_eq!(churned["cycles"], cycles, "{churned}");
    assert_eq!(churned["failed"], 0, "{churned}");
    running.store(false, SeqCst);
    ticker.await.unwrap();
    // Every connection, stream and subscription the churn made is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = server.metrics().snapshot();
        let subs = churn.subscribers() + publisher.channel.subscribers();
        if (m.active_connections, m.active_streams, subs) == (0, 0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still active after the churn: {m:?}, {subs} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}
