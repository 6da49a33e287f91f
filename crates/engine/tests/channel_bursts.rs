//! Bursts on a channel: a subscriber that reads is never cut or dropped for the size of a
//! burst (here up to 100 KB published in one go, larger than the 64 KiB high-water mark);
//! only one whose unread bytes pass the bound is. The publisher runs on a thread of its
//! own, as JS does, against subscribers served on the direct path.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::{App, Channel, ChannelOptions, Event, RouteOptions, ServerConfig, SlowClient};
use support::{eventually, open_sse, serve_with, within, SseReader};
use tokio::sync::watch;

const EVENT: usize = 10 * 1024;
const READERS: usize = 3;

type Warnings = Arc<std::sync::Mutex<Vec<rat_engine::access::Warning>>>;

async fn start(policy: SlowClient) -> (rat_engine::ServerHandle, Channel, Warnings) {
    let ch = Channel::new(
        "burst",
        ChannelOptions {
            slow_client: policy,
            ..Default::default()
        },
    );
    let mut app = App::new();
    let long = RouteOptions {
        long_lived: true,
        ..Default::default()
    };
    app.route_with(Method::GET, "/burst", Arc::new(ch.clone()), long)
        .unwrap();
    let warnings = Warnings::default();
    let log = warnings.clone();
    let config = ServerConfig {
        warnings: Some(rat_engine::access::WarningLog::new(move |w| {
            log.lock().unwrap().push(w)
        })),
        ..ServerConfig::default()
    };
    (serve_with(app, config).await, ch, warnings)
}

/// Readers that read as fast as they can; each reports how many events it has seen, and
/// fails its task on a gap, a duplicate or an early end.
async fn readers(addr: std::net::SocketAddr, ch: &Channel) -> Vec<watch::Receiver<u64>> {
    let mut seen = Vec::new();
    for _ in 0..READERS {
        let (conn, _) = open_sse(addr, "/burst").await;
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            let mut sse = SseReader::new(conn);
            let mut n = 0u64;
            while let Some(ev) = sse.next_event().await {
                let id = &ev.event.last_event_id;
                let seq: u64 = id[id.rfind('-').unwrap() + 1..].parse().unwrap();
                assert_eq!(seq, n + 1, "in order, no gap");
                assert_eq!(ev.event.data.len(), EVENT);
                n = seq;
                let _ = tx.send(n);
            }
        });
        seen.push(rx);
    }
    eventually(Duration::from_secs(2), "subscribed", || {
        ch.subscribers() == READERS
    })
    .await;
    seen
}

/// Publishes `n` events of `EVENT` bytes at once, from a thread that is not the runtime's.
fn burst(ch: &Channel, n: usize) {
    let ch = ch.clone();
    std::thread::spawn(move || {
        for _ in 0..n {
            ch.publish(Event::data_only("x".repeat(EVENT))).unwrap();
        }
    })
    .join()
    .unwrap();
}

async fn all_reach(seen: &mut [watch::Receiver<u64>], total: u64) {
    for rx in seen.iter_mut() {
        within(
            Duration::from_secs(5),
            "every reader to get every event",
            rx.wait_for(|n| *n >= total),
        )
        .await
        .expect("a reader was cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_larger_than_the_high_water_mark_reach_readers_that_keep_up() {
    for policy in [SlowClient::Close, SlowClient::DropOldest] {
        let (server, ch, warnings) = start(policy).await;
        let mut seen = readers(server.local_addr(), &ch).await;
        let mut total = 0;
        // Ten 10 KB events in one go, several times over.
        for _ in 0..7 {
            burst(&ch, 10);
            total += 10;
            all_reach(&mut seen, total).await;
        }
        // 100 KB bursts at 1 MB/s.
        for _ in 0..10 {
            burst(&ch, 10);
            total += 10;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        all_reach(&mut seen, total).await;
        let m = ch.metrics();
        assert_eq!((m.closed_slow, m.dropped), (0, 0), "{policy:?}");
        assert_eq!(m.delivered, total * READERS as u64, "{policy:?}");
        assert_eq!(ch.subscribers(), READERS);
        assert!(warnings.lock().unwrap().is_empty(), "{policy:?}");
        server.shutdown(Duration::from_millis(100)).await;
    }
}

/// A subscriber that does not read is still handled by the policy once its socket is full
/// and its queue holds the high-water mark, while the readers beside it get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_cut_or_dropped_and_the_readers_are_not() {
    for policy in [SlowClient::Close, SlowClient::DropOldest] {
        let (server, ch, warnings) = start(policy).await;
        let mut seen = readers(server.local_addr(), &ch).await;
        let (_stuck, _) = open_sse(server.local_addr(), "/burst").await;
        eventually(Duration::from_secs(2), "the stuck one subscribed", || {
            ch.subscribers() == READERS + 1
        })
        .await;
        // 40 MB, far more than the stuck client's kernel buffers and queue hold, paced by
        // the readers.
        let mut total = 0;
        for _ in 0..400 {
            burst(&ch, 10);
            total += 10;
            all_reach(&mut seen, total).await;
        }
        let m = ch.metrics();
        match policy {
            SlowClient::Close => {
                assert_eq!((m.closed_slow, m.dropped), (1, 0));
                assert_eq!(ch.subscribers(), READERS);
                let w = warnings.lock().unwrap();
                assert_eq!(w.len(), 1, "{w:?}");
                assert_eq!(w[0].kind, "slow_subscribers");
                assert!(
                    w[0].message.contains("\"burst\": 1 subscriber"),
                    "{}",
                    w[0].message
                );
            }
            SlowClient::DropOldest => {
                assert_eq!(m.closed_slow, 0);
                assert!(warnings.lock().unwrap().is_empty());
                assert!(m.dropped > 0, "{m:?}");
                assert_eq!(ch.subscribers(), READERS + 1);
            }
        }
        server.shutdown(Duration::from_millis(100)).await;
    }
}
