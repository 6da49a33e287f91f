//! The streaming demo (`examples/streaming_demo.rs`) served on a free port and read route
//! by route: the page, and every stream delivering its data over time.

#[allow(dead_code)]
#[path = "../examples/streaming_demo.rs"]
mod demo;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{get, open_sse, read_timed_chunks, serve, spread, Chunk, RawConn, SseReader};
use tokio::time::Instant;

async fn stream_route(addr: SocketAddr, path: &str, content_type: &str) -> Vec<(Instant, Vec<u8>)> {
    let mut conn = RawConn::connect(addr).await;
    conn.send_request("GET", path, &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200, "{path}");
    assert_eq!(head.get("content-type"), Some(content_type), "{path}");
    assert!(head.is_chunked(), "{path} streams");
    read_timed_chunks(&mut conn).await
}

fn concat(chunks: &[(Instant, Vec<u8>)]) -> Vec<u8> {
    chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect()
}

fn times(chunks: &[(Instant, Vec<u8>)]) -> Vec<Instant> {
    chunks.iter().map(|(t, _)| *t).collect()
}

async fn check_page(addr: SocketAddr) {
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains(r#"new EventSource("/sse")"#),
        "the SSE panel uses EventSource"
    );
    assert!(
        html.contains("getReader()"),
        "the other panels read the body as a stream"
    );
    for route in [
        "/chunked",
        "/json-stream",
        "/text-stream",
        "/binary-stream",
        "/metrics",
    ] {
        assert!(
            html.contains(&format!("\"{route}\"")),
            "the page reads {route}"
        );
    }
    for external in ["src=\"http", "href=\"http", "@import", "<link"] {
        assert!(
            !html.contains(external),
            "the page is self-contained ({external})"
        );
    }
}

async fn check_sse(addr: SocketAddr) {
    let (conn, _) = open_sse(addr, "/sse").await;
    let mut reader = SseReader::new(conn);
    let connected = reader.next_event().await.expect("connected");
    assert_eq!(connected.event.event_type, "connected");
    let hello: serde_json::Value = serde_json::from_str(&connected.event.data).unwrap();
    assert_eq!(hello["updates"], demo::SSE_UPDATES);

    let mut last = connected.at;
    for counter in 1..=2u64 {
        let update = reader.next_event().await.expect("an update");
        assert_eq!(update.event.event_type, "update");
        assert_eq!(update.event.last_event_id, counter.to_string());
        let data: serde_json::Value = serde_json::from_str(&update.event.data).unwrap();
        assert_eq!(data["counter"], counter);
        assert_eq!(data["message"], format!("Update #{counter}"));
        assert!(
            data["timestamp"].as_u64().unwrap() > 1_600_000_000_000,
            "a Unix time in ms"
        );
        // Sent by a background task once a second: not together with the first event.
        let gap = update.at.duration_since(last);
        assert!(
            gap >= demo::SSE_INTERVAL / 2,
            "update {counter} came {gap:?} after the previous event"
        );
        last = update.at;
    }
}

async fn check_sse_resume(addr: SocketAddr) {
    // A reconnecting browser sends Last-Event-ID: the stream resumes after it, then ends.
    let mut conn = RawConn::connect(addr).await;
    let last = (demo::SSE_UPDATES - 1).to_string();
    conn.send_request("GET", "/sse", &[("Last-Event-ID", &last)], b"")
        .await;
    assert_eq!(conn.read_head().await.status, 200);
    let mut reader = SseReader::new(conn);
    let mut seen = Vec::new();
    while let Some(a) = reader.next_event().await {
        seen.push((a.event.event_type, a.event.last_event_id));
    }
    let total = demo::SSE_UPDATES.to_string();
    assert_eq!(
        seen,
        vec![
            ("connected".to_string(), String::new()),
            ("update".to_string(), total.clone()),
            ("done".to_string(), total),
        ]
    );
    assert_eq!(
        reader.ended,
        Some(Chunk::End),
        "the stream ends cleanly after done"
    );
}

async fn check_chunked(addr: SocketAddr) {
    let chunks = stream_route(addr, "/chunked", "text/plain; charset=utf-8").await;
    let want: String = demo::CHUNKED_STEPS
        .iter()
        .map(|s| format!("{s}\n"))
        .collect();
    assert_eq!(String::from_utf8(concat(&chunks)).unwrap(), want);
    assert_eq!(
        chunks.len(),
        demo::CHUNKED_STEPS.len(),
        "one chunk per step"
    );
    let s = spread(&times(&chunks));
    assert!(s >= demo::CHUNK_STEP * 2, "steps arrived within {s:?}");
}

async fn check_json(addr: SocketAddr) {
    let chunks = stream_route(addr, "/json-stream", "application/x-ndjson").await;
    let body = String::from_utf8(concat(&chunks)).unwrap();
    let items: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items, demo::json_items());
    let s = spread(&times(&chunks));
    assert!(
        s >= demo::ITEM_STEP * 2,
        "NDJSON items arrived within {s:?}"
    );
}

async fn check_text(addr: SocketAddr) {
    let chunks = stream_route(addr, "/text-stream", "text/plain; charset=utf-8").await;
    let body = String::from_utf8(concat(&chunks)).unwrap();
    assert_eq!(body.lines().collect::<Vec<_>>(), demo::TEXT_LINES);
    let s = spread(&times(&chunks));
    assert!(s >= demo::ITEM_STEP * 2, "lines arrived within {s:?}");
}

async fn check_binary(addr: SocketAddr) {
    let chunks = stream_route(addr, "/binary-stream", "application/octet-stream").await;
    let want: Vec<u8> = (0..demo::BINARY_CHUNKS)
        .flat_map(demo::binary_chunk)
        .collect();
    assert_eq!(concat(&chunks), want);
    assert_eq!(want.len(), demo::BINARY_CHUNKS * demo::BINARY_CHUNK_LEN);
    let s = spread(&times(&chunks));
    assert!(
        s >= demo::ITEM_STEP * 2,
        "binary chunks arrived within {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_its_page_and_every_stream_delivers_over_time() {
    let server = serve(demo::app()).await;
    let addr = server.local_addr();
    let started = Instant::now();
    tokio::join!(
        check_page(addr),
        check_sse(addr),
        check_sse_resume(addr),
        check_chunked(addr),
        check_json(addr),
        check_text(addr),
        check_binary(addr),
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    let m = get(addr, "/metrics").await.json();
    assert!(m["total_requests"].as_u64().unwrap() >= 8, "{m}");
    assert!(m["total_streams"].as_u64().unwrap() >= 6, "{m}");
    assert!(m["events_sent"].as_u64().unwrap() >= 6, "{m}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unknown_demo_routes_are_404() {
    let server = serve(demo::app()).await;
    assert_eq!(get(server.local_addr(), "/nope").await.status, 404);
}
