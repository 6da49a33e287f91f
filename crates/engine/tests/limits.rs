//! Limits and timeouts: slow or oversized request heads, stalled bodies, handlers that do
//! not answer, idle keep-alive connections, too many connections or streams. Each refusal
//! is answered (or the connection closed), counted by reason, and leaves the connection
//! and stream counts where they were.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::{App, Event, Request, RouteOptions, ServerConfig, SseResponse};
use support::{eventually, open_sse, serve_with, RawConn};
use tokio::time::Instant;

const SHORT: Duration = Duration::from_millis(300);

fn config() -> ServerConfig {
    ServerConfig {
        header_timeout: SHORT,
        body_timeout: SHORT,
        idle_timeout: SHORT,
        handler_timeout: Some(SHORT),
        ..Default::default()
    }
}

fn app() -> App {
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.post("/echo", |req: Request| async move { req.body().clone() })
        .unwrap();
    app.get("/never", |_req| std::future::pending::<&'static str>())
        .unwrap();
    let stream = |max_streams| RouteOptions {
        long_lived: true,
        stream: true,
        max_streams,
        ..Default::default()
    };
    let events = |_req: Request| async {
        let sse = SseResponse::new();
        sse.send_event("open", "1").unwrap();
        sse
    };
    app.route_with(Method::GET, "/events", Arc::new(events), stream(None))
        .unwrap();
    app.route_with(Method::GET, "/one", Arc::new(events), stream(Some(1)))
        .unwrap();
    // A stream route whose first event comes after the handler timeout: exempt from it.
    let late = |_req: Request| async {
        tokio::time::sleep(SHORT * 2).await;
        let sse = SseResponse::new();
        sse.sender().send(&Event::data_only("late")).await.unwrap();
        sse
    };
    app.route_with(Method::GET, "/late", Arc::new(late), stream(None))
        .unwrap();
    app
}

async fn text_until_closed(conn: &mut RawConn) -> String {
    assert!(conn.closed_within(Duration::from_secs(3)).await, "closed");
    String::from_utf8_lossy(conn.pending()).into_owned()
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_closes_the_connection() {
    let server = serve_with(app(), config()).await;
    let addr = server.local_addr();
    // Nothing at all, and half a head.
    let mut silent = RawConn::connect(addr).await;
    let mut slow = RawConn::connect(addr).await;
    slow.send_raw(b"GET /hello HTTP/1.1\r\nHost: x\r\n").await;
    let t0 = Instant::now();
    assert!(silent.closed_within(Duration::from_secs(3)).await);
    assert!(slow.closed_within(Duration::from_secs(3)).await);
    assert!(t0.elapsed() >= SHORT / 2, "{:?}", t0.elapsed());
    let m = server.metrics().snapshot();
    assert_eq!(m.header_timeouts, 2);
    eventually(Duration::from_secs(1), "connections counted out", || {
        server.metrics().snapshot().active_connections == 0
    })
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = serve_with(app(), config()).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let (head, _) = conn.roundtrip("GET", "/events-not-there", &[], b"").await;
    assert_eq!(head.status, 404);
    // Still open a moment later, closed after the idle timeout.
    assert!(!conn.closed_within(SHORT / 3).await);
    assert!(conn.closed_within(Duration::from_secs(3)).await);
    assert_eq!(
        server.metrics().snapshot().header_timeouts,
        0,
        "idle is not a slow head"
    );
}

#[tokio::test]
async fn an_h2c_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout() {
    let server = serve_with(app(), config()).await;
    // The preface and an empty SETTINGS frame, then nothing.
    let mut preface_only = RawConn::connect(server.local_addr()).await;
    preface_only
        .send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    let t0 = Instant::now();
    assert!(preface_only.closed_within(Duration::from_secs(3)).await);
    assert!(t0.elapsed() >= SHORT / 2, "{:?}", t0.elapsed());

    // An open stream keeps its connection past the idle timeout; once it is gone the
    // connection is idle and closed.
    let mut h2 = support::h2_connect(server.local_addr()).await;
    let get = |path: &str| {
        http::Request::get(format!("http://127.0.0.1{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let res = h2.send_request(get("/events")).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut events = res.into_body();
    use http_body_util::BodyExt;
    let first = events.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"event: open"), "{first:?}");
    tokio::time::sleep(SHORT * 3).await;
    let res = h2.send_request(get("/hello")).await.expect("still open");
    assert_eq!(res.status(), 200);
    drop(events);
    eventually(
        Duration::from_secs(3),
        "the idle h2 connection closed",
        || h2.is_closed(),
    )
    .await;
    eventually(Duration::from_secs(1), "connections counted out", || {
        server.metrics().snapshot().active_connections == 0
    })
    .await;
}

#[tokio::test]
async fn a_stalled_body_gets_a_408() {
    let server = serve_with(app(), config()).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 408);
    assert!(String::from_utf8_lossy(&conn.read_body(&head).await).contains("stalled"));
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    assert_eq!(server.metrics().snapshot().body_timeouts, 1);
}

#[tokio::test]
async fn a_handler_that_does_not_answer_gets_a_504_and_streams_are_exempt() {
    let server = serve_with(app(), config()).await;
    let addr = server.local_addr();
    let mut conn = RawConn::connect(addr).await;
    let (head, body) = conn.roundtrip("GET", "/never", &[], b"").await;
    assert_eq!(head.status, 504);
    assert!(String::from_utf8_lossy(&body).contains("did not answer"));
    // The connection goes on.
    let (head, _) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(head.status, 200);
    let (conn, _) = open_sse(addr, "/late").await;
    let mut sse = support::SseReader::new(conn);
    let ev = sse.next_event().await.expect("the late event");
    assert_eq!(ev.event.data, "late");
    assert_eq!(server.metrics().snapshot().handler_timeouts, 1);
}

#[tokio::test]
async fn oversized_heads_and_targets_get_431_and_414_on_both_paths() {
    let server = serve_with(app(), config()).await;
    let addr = server.local_addr();
    let big = "x".repeat(20_000);
    let long = "a".repeat(9_000);
    for (req, status) in [
        (
            format!("GET /events HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
            "431",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"),
            "431",
        ),
        (
            format!("GET /events?{long} HTTP/1.1\r\nHost: x\r\n\r\n"),
            "414",
        ),
        (
            format!("POST /echo?{long} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            "414",
        ),
    ] {
        let mut conn = RawConn::connect(addr).await;
        conn.send_raw(req.as_bytes()).await;
        let text = text_until_closed(&mut conn).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{}: {text}",
            &req[..20]
        );
    }
    let m = server.metrics().snapshot();
    assert_eq!(m.rejected_requests, 4);
}

#[tokio::test]
async fn past_max_connections_a_new_connection_gets_a_503() {
    let mut c = config();
    c.max_connections = Some(2);
    c.idle_timeout = Duration::from_secs(10);
    let server = serve_with(app(), c).await;
    let addr = server.local_addr();
    let mut a = RawConn::connect(addr).await;
    let (head, _) = a.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(head.status, 200);
    let _b = RawConn::connect(addr).await;
    eventually(Duration::from_secs(1), "two connections", || {
        server.metrics().snapshot().active_connections == 2
    })
    .await;
    let mut refused = RawConn::connect(addr).await;
    let text = text_until_closed(&mut refused).await;
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    drop(a);
    eventually(Duration::from_secs(1), "one connection", || {
        server.metrics().snapshot().active_connections == 1
    })
    .await;
    let mut again = RawConn::connect(addr).await;
    let (head, _) = again.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(server.metrics().snapshot().refused_connections, 1);
}

#[tokio::test]
async fn past_the_stream_limits_a_stream_gets_a_429_until_one_closes() {
    let mut c = config();
    c.max_streams_per_ip = Some(2);
    let server = serve_with(app(), c).await;
    let addr = server.local_addr();
    // Per route: one at a time.
    let (one, _) = open_sse(addr, "/one").await;
    let mut conn = RawConn::connect(addr).await;
    let (head, _) = conn.roundtrip("GET", "/one", &[], b"").await;
    assert_eq!(head.status, 429);
    assert_eq!(head.get("retry-after"), Some("10"));
    drop(one);
    eventually(Duration::from_secs(1), "the stream closed", || {
        server.metrics().snapshot().active_streams == 0
    })
    .await;
    let (one, _) = open_sse(addr, "/one").await;
    // Per IP: two in all.
    let (two, _) = open_sse(addr, "/events").await;
    let mut conn = RawConn::connect(addr).await;
    let (head, _) = conn.roundtrip("GET", "/events", &[], b"").await;
    assert_eq!(head.status, 429);
    // Plain requests are not streams.
    let (head, _) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(head.status, 200);
    drop((one, two));
    eventually(Duration::from_secs(1), "streams closed", || {
        server.metrics().snapshot().active_streams == 0
    })
    .await;
    let (_three, _) = open_sse(addr, "/events").await;
    let m = server.metrics().snapshot();
    assert_eq!(m.refused_streams, 2);
}

#[tokio::test]
async fn static_tokens_refuse_a_channel_route_before_it_subscribes() {
    use rat_engine::auth::TokenRule;
    use rat_engine::{Channel, ChannelOptions};
    let ch = Channel::new("admin", ChannelOptions::default());
    let mut app = app();
    let long = RouteOptions {
        long_lived: true,
        stream: true,
        ..Default::default()
    };
    app.route_with(Method::GET, "/admin/feed", Arc::new(ch.clone()), long)
        .unwrap();
    let rule = TokenRule::new("/admin")
        .bearer(["s3cret"])
        .api_keys("x-api-key", ["k1"])
        .unwrap();
    let server = serve_with(app, config().auth(rule)).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    for auth in [None, Some(("Authorization", "Bearer wrong"))] {
        conn.send_request("GET", "/admin/feed", auth.as_slice(), b"")
            .await;
        let head = conn.read_head().await;
        assert_eq!(head.status, 401);
        assert_eq!(head.get("www-authenticate"), Some("Bearer"));
        conn.read_body(&head).await;
    }
    assert_eq!(ch.subscribers(), 0, "refused before subscribing");
    let (head, _) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(head.status, 200, "other paths are open");
    let mut subscribed = Vec::new();
    for auth in [("Authorization", "Bearer s3cret"), ("x-api-key", "k1")] {
        let mut c = RawConn::connect(server.local_addr()).await;
        c.send_request("GET", "/admin/feed", &[auth], b"").await;
        assert_eq!(c.read_head().await.status, 200);
        subscribed.push(c);
    }
    eventually(Duration::from_secs(1), "two subscribers", || {
        ch.subscribers() == 2
    })
    .await;
    assert_eq!(server.metrics().snapshot().unauthorized, 2);
}

#[tokio::test]
async fn a_stream_past_max_stream_age_ends_cleanly() {
    let c = ServerConfig {
        max_stream_age: Some(SHORT),
        ..config()
    };
    let server = serve_with(app(), c).await;
    let (conn, _) = open_sse(server.local_addr(), "/events").await;
    let mut sse = support::SseReader::new(conn);
    let t0 = Instant::now();
    assert_eq!(
        sse.next_event().await.expect("the first event").event.data,
        "1"
    );
    assert!(sse.next_event().await.is_none());
    assert_eq!(
        sse.ended,
        Some(support::Chunk::End),
        "ended cleanly, not cut"
    );
    assert!(t0.elapsed() >= SHORT / 2, "{:?}", t0.elapsed());
}
