//! The server's counters follow connections, requests and streams as they come and go.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rat_engine::{App, Event, MetricsSnapshot, ServerHandle, SseResponse};
use support::{eventually, open_sse, serve, RawConn, SseReader};

fn app() -> App {
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.get("/events", |_req| async {
        let sse = SseResponse::new();
        // One event written by the handler before the response starts...
        sse.send_event("connected", "hi").unwrap();
        let tx = sse.sender();
        tokio::spawn(async move {
            // ...and two more from a producer task, then it idles until the client leaves.
            for i in 0..2 {
                if tx.send(&Event::data_only(i.to_string())).await.is_err() {
                    return;
                }
            }
            tx.closed().await;
        });
        sse
    })
    .unwrap();
    app
}

async fn wait_for(server: &ServerHandle, what: &str, cond: impl Fn(&MetricsSnapshot) -> bool) {
    eventually(Duration::from_secs(2), what, || {
        cond(&server.metrics().snapshot())
    })
    .await;
    // Report the whole snapshot if a later assertion fails.
    let _ = what;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_request_and_stream_counters_go_up_and_down() {
    let server = serve(app()).await;
    let addr = server.local_addr();
    assert_eq!(server.metrics().snapshot(), MetricsSnapshot::default());

    // A keep-alive connection with two requests.
    let mut plain = RawConn::connect(addr).await;
    for _ in 0..2 {
        let (head, body) = plain.roundtrip("GET", "/hello", &[], b"").await;
        assert_eq!((head.status, body.as_slice()), (200, &b"hello"[..]));
    }
    let s = server.metrics().snapshot();
    assert_eq!(
        (s.total_requests, s.total_connections, s.active_connections),
        (2, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        (s.active_streams, s.total_streams),
        (0, 0),
        "plain responses are not streams: {s:?}"
    );
    assert!(
        s.bytes_sent == 0,
        "bytes_sent counts stream bytes only: {s:?}"
    );

    // An SSE stream on a second connection.
    let (sse, _) = open_sse(addr, "/events").await;
    let mut sse = SseReader::new(sse);
    for _ in 0..3 {
        sse.next_event().await.expect("an event");
    }
    let s = server.metrics().snapshot();
    assert_eq!((s.active_connections, s.total_connections), (2, 2), "{s:?}");
    assert_eq!((s.active_streams, s.total_streams), (1, 1), "{s:?}");
    assert_eq!(s.total_requests, 3);
    assert_eq!(
        s.events_sent, 3,
        "events written before and after the response started: {s:?}"
    );
    assert!(s.bytes_sent >= 3 * "data: 0\n\n".len() as u64, "{s:?}");

    // A 404 is counted as a request and as rejected.
    let (head, _) = plain.roundtrip("GET", "/missing", &[], b"").await;
    assert_eq!(head.status, 404);
    let s = server.metrics().snapshot();
    assert_eq!((s.total_requests, s.rejected_requests), (4, 1), "{s:?}");
    assert_eq!(s.responses, [0, 3, 0, 1, 0], "by status class: {s:?}");

    // The SSE client leaves: its stream and its connection go away.
    drop(sse);
    wait_for(&server, "active_streams back to 0", |s| {
        s.active_streams == 0
    })
    .await;
    wait_for(&server, "one active connection", |s| {
        s.active_connections == 1
    })
    .await;
    assert_eq!(server.metrics().snapshot().total_streams, 1);

    // The plain connection closes too.
    drop(plain);
    wait_for(&server, "no active connections", |s| {
        s.active_connections == 0
    })
    .await;
    let s = server.metrics().snapshot();
    assert_eq!(
        (s.total_connections, s.total_requests, s.handler_errors),
        (2, 4, 0),
        "{s:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_counts_once_and_each_stream_request_separately() {
    let server = serve(app()).await;
    let mut h2 = support::h2_connect(server.local_addr()).await;
    let req = |path: &str| {
        http::Request::builder()
            .uri(format!("http://127.0.0.1{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = h2.send_request(req("/events")).await.unwrap();
    let b = h2.send_request(req("/events")).await.unwrap();
    let hello = h2.send_request(req("/hello")).await.unwrap();
    assert_eq!(
        hello.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    let s = server.metrics().snapshot();
    assert_eq!(
        (s.active_connections, s.total_requests, s.active_streams),
        (1, 3, 2),
        "{s:?}"
    );

    drop(a);
    wait_for(&server, "one stream left after an h2 stream reset", |s| {
        s.active_streams == 1
    })
    .await;
    assert_eq!(
        server.metrics().snapshot().active_connections,
        1,
        "the connection stays"
    );
    drop(b);
    wait_for(&server, "no streams", |s| s.active_streams == 0).await;
    drop(h2);
    wait_for(&server, "no connections", |s| s.active_connections == 0).await;
    server.shutdown(Duration::from_secs(1)).await;
}
