//! Each example in `examples/`, its routes served on a free port and checked with a real
//! client (the chat and streaming demos have their own test files).

mod support;

#[allow(dead_code)]
#[path = "../examples/hello.rs"]
mod hello;

#[allow(dead_code)]
#[path = "../examples/sse_generator.rs"]
mod sse_generator;

#[allow(dead_code)]
#[path = "../examples/channel_replay.rs"]
mod channel_replay;

#[allow(dead_code)]
#[path = "../examples/chunked_download.rs"]
mod chunked_download;

#[allow(dead_code)]
#[path = "../examples/graceful_shutdown.rs"]
mod graceful_shutdown;

use std::time::Duration;

use support::{fetch, get, open_sse, request, serve, within, Chunk, RawConn, SseReader};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn hello() {
    let server = serve(hello::app()).await;
    let addr = server.local_addr();
    let res = get(addr, "/").await;
    assert_eq!((res.status, res.text().as_str()), (200, "Hello, world!\n"));
    assert_eq!(get(addr, "/hello/rat").await.text(), "Hello, rat!\n");
    let res = get(addr, "/json/r%C3%A4t").await;
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.json(),
        serde_json::json!({ "greeting": "Hello, rät!", "length": 3 })
    );
    assert_eq!(get(addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn sse_generator() {
    let server = serve(sse_generator::app()).await;
    let (conn, _head) = open_sse(server.local_addr(), "/countdown?from=3&every_ms=50").await;
    let mut reader = SseReader::new(conn);
    let mut got = Vec::new();
    while let Some(a) = within(DEADLINE, "an event", reader.next_event()).await {
        got.push((a.event.event_type, a.event.data, a.at));
    }
    assert_eq!(reader.ended, Some(Chunk::End), "the stream ends cleanly");
    let names: Vec<(&str, &str)> = got
        .iter()
        .map(|(t, d, _)| (t.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("message", "3"),
            ("message", "2"),
            ("message", "1"),
            ("liftoff", "")
        ]
    );
    let took = got[3].2 - got[0].2;
    assert!(
        took >= Duration::from_millis(140),
        "one event per 50 ms tick, not all at once: {took:?}"
    );
}

#[tokio::test]
async fn channel_replay() {
    let server = serve(channel_replay::app()).await;
    let addr = server.local_addr();
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let res = fetch(addr, request("POST", addr, "/messages", text)).await;
        assert_eq!(res.status, 201);
        ids.push(res.text().trim().to_string());
    }

    // A client that saw "one" resumes after it: "two" and "three" from history, then live.
    let mut conn = RawConn::connect(addr).await;
    let resume = [
        ("Accept", "text/event-stream"),
        ("Last-Event-ID", ids[0].as_str()),
    ];
    conn.send_request("GET", "/events", &resume, b"").await;
    let head = within(DEADLINE, "the head", conn.read_head()).await;
    assert_eq!(head.status, 200);
    let mut reader = SseReader::new(conn);
    for (want, id) in [("two", &ids[1]), ("three", &ids[2])] {
        let ev = within(DEADLINE, "a replayed event", reader.next_event())
            .await
            .expect("an event");
        assert_eq!(
            (ev.event.data.as_str(), &ev.event.last_event_id),
            (want, id)
        );
    }
    let res = fetch(addr, request("POST", addr, "/messages", "four")).await;
    assert_eq!(res.status, 201);
    let ev = within(DEADLINE, "the live event", reader.next_event())
        .await
        .expect("an event");
    assert_eq!(ev.event.data, "four");
    assert_eq!(ev.event.last_event_id, res.text().trim());

    let bad = fetch(addr, request("POST", addr, "/messages", vec![0xff, 0xfe])).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn chunked_download() {
    let server = serve(chunked_download::app()).await;
    let addr = server.local_addr();
    let mut conn = RawConn::connect(addr).await;
    conn.send_request("GET", "/report.csv?rows=2500", &[], b"")
        .await;
    let head = within(DEADLINE, "the head", conn.read_head()).await;
    assert_eq!(head.status, 200);
    assert!(head.is_chunked(), "{head:?}");
    assert_eq!(head.get("content-type"), Some("text/csv"));
    assert_eq!(
        head.get("content-disposition"),
        Some("attachment; filename=\"report.csv\"")
    );
    let mut chunks = Vec::new();
    loop {
        match within(DEADLINE, "a chunk", conn.read_chunk()).await {
            Chunk::Data(d) => chunks.push(d),
            Chunk::End => break,
            Chunk::Eof => panic!("the download was cut"),
        }
    }
    let body = String::from_utf8(chunks.concat()).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2501);
    assert_eq!(lines[0], "id,name,score");
    assert_eq!(format!("{}\n", lines[1]), chunked_download::row(0));
    assert_eq!(format!("{}\n", lines[2500]), chunked_download::row(2499));
    // Sent as it is generated: the header line, then one chunk per thousand rows.
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
}

#[tokio::test]
async fn graceful_shutdown() {
    use graceful_shutdown::GRACE;
    let server = serve(graceful_shutdown::app()).await;
    let addr = server.local_addr();

    let (conn, _head) = open_sse(addr, "/ticks").await;
    let mut ticks = SseReader::new(conn);
    let first = within(DEADLINE, "a tick", ticks.next_event())
        .await
        .expect("an event");
    assert_eq!(first.event.data, "1");

    let mut slow = RawConn::connect(addr).await;
    slow.send_request("GET", "/slow", &[], b"").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let run = tokio::spawn(graceful_shutdown::run(server, async {
        let _ = signalled.await;
    }));
    signal.send(()).unwrap();

    // The request in flight completes...
    let (head, body) = within(DEADLINE, "the slow answer", async {
        let head = slow.read_head().await;
        let body = slow.read_body(&head).await;
        (head, body)
    })
    .await;
    assert_eq!((head.status, &body[..]), (200, &b"done\n"[..]));
    let answered = started.elapsed();
    assert!(
        answered < GRACE,
        "answered after {answered:?}: the request did not wait for the grace period"
    );

    // ...new connections are refused...
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );

    // ...and the open SSE stream ends cleanly once the grace period is over.
    while within(DEADLINE, "the end of the ticks", ticks.next_event())
        .await
        .is_some()
    {}
    assert_eq!(ticks.ended, Some(Chunk::End));
    let ended = started.elapsed();
    assert!(
        ended >= GRACE,
        "the stream ended after {ended:?}, before the grace"
    );
    within(DEADLINE, "run to return", run).await.unwrap();
}
