//! The access log: one entry per request when its response is over, with its status,
//! duration and bytes, on the direct path and hyper's; a stream is logged when it ends.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::access::{AccessEntry, AccessLog};
use rat_engine::{App, Event, Request, RouteOptions, ServerConfig, SseResponse};
use support::{open_sse, serve_with, within, RawConn, SseReader};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_once_its_response_is_over() {
    let (tx, mut entries) = mpsc::unbounded_channel::<AccessEntry>();
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    let events = |_req: Request| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(&Event::data_only(format!("n{i}"))).await;
            }
            tx.end();
        });
        sse
    };
    let long = RouteOptions {
        long_lived: true,
        stream: true,
        ..Default::default()
    };
    app.route_with(Method::GET, "/events", Arc::new(events), long)
        .unwrap();
    let config = ServerConfig {
        access_log: Some(AccessLog::new(move |e| {
            let _ = tx.send(e);
        })),
        ..Default::default()
    };
    let server = serve_with(app, config).await;
    let addr = server.local_addr();
    let mut conn = RawConn::connect(addr).await;
    conn.roundtrip("GET", "/hello", &[("User-Agent", "probe/1")], b"")
        .await;
    conn.roundtrip("POST", "/nowhere", &[], b"x").await;
    let hello = next(&mut entries).await;
    assert_eq!(
        (
            hello.method.as_str(),
            hello.path.as_str(),
            hello.status,
            hello.bytes
        ),
        ("GET", "/hello", 200, 5)
    );
    assert_eq!(hello.user_agent.as_deref(), Some("probe/1"));
    assert_eq!(hello.remote.map(|r| r.ip()), Some(addr.ip()));
    let missing = next(&mut entries).await;
    assert_eq!((missing.method.as_str(), missing.status), ("POST", 404));

    // A stream: logged when it ends, with its duration and bytes.
    let (conn, _) = open_sse(addr, "/events").await;
    let mut sse = SseReader::new(conn);
    while sse.next_event().await.is_some() {}
    let stream = next(&mut entries).await;
    assert_eq!((stream.path.as_str(), stream.status), ("/events", 200));
    assert!(
        stream.duration >= Duration::from_millis(100),
        "{:?}",
        stream.duration
    );
    assert_eq!(
        stream.bytes as usize,
        3 * "data: n0\n\n".len(),
        "three events"
    );
    assert!(entries.try_recv().is_err(), "one entry per request");
}

async fn next(entries: &mut mpsc::UnboundedReceiver<AccessEntry>) -> AccessEntry {
    within(Duration::from_secs(3), "an entry", entries.recv())
        .await
        .unwrap()
}
