//! Chunked, NDJSON, text and binary streams over a real socket: each chunk goes out when
//! it is produced (not collected first), with the right content type.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream};
use rat_engine::{
    binary_stream, json_stream, text_stream, App, ChunkedResponse, QueueLimits, StreamingResponse,
};
use support::{read_timed_chunks, serve, spread, Chunk, Head, RawConn};
use tokio::time::Instant;

/// Yields `items`, waiting `every` before each one after the first.
fn paced<T: Send + 'static>(
    items: Vec<T>,
    every: Duration,
) -> impl Stream<Item = T> + Send + 'static {
    stream::unfold(
        (items.into_iter(), true),
        move |(mut it, first)| async move {
            let item = it.next()?;
            if !first {
                tokio::time::sleep(every).await;
            }
            Some((item, (it, false)))
        },
    )
}

const STEP: Duration = Duration::from_millis(120);

fn app() -> App {
    let mut app = App::new();
    app.get("/chunked", |_req| async {
        ChunkedResponse::new()
            .add_chunk("step 1\n")
            .add_delay(STEP)
            .add_chunk("step 2\n")
            .add_delay(STEP)
            .add_chunk("step 3\n")
            .add_delay(STEP)
            .add_chunk("done\n")
    })
    .unwrap();
    app.get("/csv", |_req| async {
        ChunkedResponse::new()
            .content_type("text/csv")
            .add_chunk("a,b\n")
            .add_chunk("1,2\n")
            .add_chunk("3,4\n")
            .with_delay(STEP)
    })
    .unwrap();
    app.get("/ndjson", |_req| async {
        let items = (1..=4)
            .map(|i| serde_json::json!({"id": i, "name": format!("item {i}")}))
            .collect();
        json_stream(paced(items, STEP))
    })
    .unwrap();
    app.get("/text", |_req| async {
        text_stream(paced(
            vec!["first line", "second line", "third line", "第四行"],
            STEP,
        ))
    })
    .unwrap();
    app.get("/binary", |_req| async {
        let chunks: Vec<Vec<u8>> = vec![
            vec![0, 1, 2, 255],
            b"\r\n0\r\n\r\n".to_vec(),
            vec![0xFE; 300],
        ];
        binary_stream(paced(chunks, STEP))
    })
    .unwrap();
    app.get("/custom", |_req| async {
        StreamingResponse::new(
            "application/vnd.test",
            paced(vec![Ok(Bytes::from("x")), Ok(Bytes::from("y"))], STEP),
        )
        .status(http::StatusCode::ACCEPTED)
        .header(
            http::HeaderName::from_static("x-stream"),
            http::HeaderValue::from_static("yes"),
        )
    })
    .unwrap();
    app.get("/channel", |_req| async {
        let (res, tx) =
            StreamingResponse::channel("text/plain; charset=utf-8", QueueLimits::default());
        tokio::spawn(async move {
            for i in 0..4 {
                if tx.send(Bytes::from(format!("line {i}\n"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(STEP).await;
            }
            tx.end();
        });
        res
    })
    .unwrap();
    app.get("/broken", |_req| async {
        let items = vec![
            Ok(Bytes::from("partial\n")),
            Err(rat_engine::Error::handler("producer failed")),
        ];
        StreamingResponse::new("text/plain", paced(items, STEP))
    })
    .unwrap();
    app
}

async fn open(path: &str, server: &rat_engine::ServerHandle) -> (RawConn, Head) {
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request("GET", path, &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status / 100, 2, "{path}: {head:?}");
    assert!(
        head.is_chunked(),
        "{path} streams with chunked encoding: {head:?}"
    );
    assert_eq!(head.get("cache-control"), Some("no-cache"), "{path}");
    (conn, head)
}

/// Reads the body and checks that its chunks were spread over time.
async fn read_streamed(conn: &mut RawConn, min_spread: Duration) -> (Vec<u8>, Vec<Instant>) {
    let chunks = read_timed_chunks(conn).await;
    let times: Vec<Instant> = chunks.iter().map(|(t, _)| *t).collect();
    let s = spread(&times);
    assert!(
        chunks.len() >= 3,
        "only {} chunks: the body was not streamed",
        chunks.len()
    );
    assert!(s >= min_spread, "chunks arrived within {s:?}: not streamed");
    (chunks.into_iter().flat_map(|(_, d)| d).collect(), times)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_steps_arrive_over_time() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/chunked", &server).await;
    assert_eq!(head.get("content-type"), Some("text/plain; charset=utf-8"));
    let t0 = Instant::now();
    let (body, times) = read_streamed(&mut conn, 2 * STEP).await;
    assert_eq!(body, b"step 1\nstep 2\nstep 3\ndone\n");
    // The first step is not held back until the last one is ready.
    assert!(times[0].duration_since(t0) < times.last().unwrap().duration_since(t0) / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_with_a_content_type_and_a_pace() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/csv", &server).await;
    assert_eq!(head.get("content-type"), Some("text/csv"));
    let (body, _) = read_streamed(&mut conn, STEP).await;
    assert_eq!(body, b"a,b\n1,2\n3,4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_items_arrive_one_line_at_a_time() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/ndjson", &server).await;
    assert_eq!(head.get("content-type"), Some("application/x-ndjson"));
    let chunks = read_timed_chunks(&mut conn).await;
    // Each item is one complete line, in its own chunk, spaced out.
    let lines: Vec<serde_json::Value> = chunks
        .iter()
        .map(|(_, d)| {
            assert!(
                d.ends_with(b"\n") && d.iter().filter(|b| **b == b'\n').count() == 1,
                "{d:?}"
            );
            serde_json::from_slice(d).unwrap()
        })
        .collect();
    let ids: Vec<_> = lines.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(lines[3]["name"], "item 4");
    let times: Vec<_> = chunks.iter().map(|(t, _)| *t).collect();
    assert!(spread(&times) >= 2 * STEP, "{:?}", spread(&times));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_stream_lines_arrive_over_time() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/text", &server).await;
    assert_eq!(head.get("content-type"), Some("text/plain; charset=utf-8"));
    let (body, _) = read_streamed(&mut conn, 2 * STEP).await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "first line\nsecond line\nthird line\n第四行\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_stream_bytes_arrive_unchanged_over_time() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/binary", &server).await;
    assert_eq!(head.get("content-type"), Some("application/octet-stream"));
    let (body, _) = read_streamed(&mut conn, STEP).await;
    let mut want = vec![0, 1, 2, 255];
    want.extend_from_slice(b"\r\n0\r\n\r\n");
    want.extend_from_slice(&[0xFE; 300]);
    assert_eq!(body, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_keeps_its_status_and_headers() {
    let server = serve(app()).await;
    let (mut conn, head) = open("/custom", &server).await;
    assert_eq!(head.status, 202);
    assert_eq!(head.get("content-type"), Some("application/vnd.test"));
    assert_eq!(head.get("x-stream"), Some("yes"));
    assert_eq!(conn.read_chunked_body().await, b"xy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_stream_delivers_what_the_producer_sends_as_it_sends_it() {
    let server = serve(app()).await;
    let (mut conn, _) = open("/channel", &server).await;
    let (body, _) = read_streamed(&mut conn, 2 * STEP).await;
    assert_eq!(body, b"line 0\nline 1\nline 2\nline 3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stream_cuts_the_connection_instead_of_ending_cleanly() {
    let server = serve(app()).await;
    let (mut conn, _) = open("/broken", &server).await;
    assert_eq!(conn.read_chunk().await, Chunk::Data(b"partial\n".to_vec()));
    assert_eq!(
        conn.read_chunk().await,
        Chunk::Eof,
        "the client must see an incomplete body"
    );
}

/// A byte stream that yields one chunk, then nothing, and sets `dropped` when dropped.
fn one_chunk_then_idle(
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> StreamingResponse {
    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    use futures_util::StreamExt;
    let flag = Flag(dropped);
    let first = async { Ok::<_, rat_engine::Error>(Bytes::from_static(b"first\n")) };
    let chunks = stream::once(first).chain(stream::poll_fn(move |_| {
        let _held = &flag;
        std::task::Poll::Pending
    }));
    StreamingResponse::new("text/plain", chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_byte_stream_holds_its_route_slot_and_is_cut_at_shutdown() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let handler = move |_req| {
        let d = d.clone();
        async move { one_chunk_then_idle(d) }
    };
    let mut app = App::new();
    app.route_with(
        rat_engine::http::Method::GET,
        "/one",
        Arc::new(handler),
        rat_engine::RouteOptions {
            stream: true,
            max_streams: Some(1),
            ..rat_engine::RouteOptions::default()
        },
    )
    .unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();
    let mut first = RawConn::connect(addr).await;
    first.send_request("GET", "/one", &[], b"").await;
    assert_eq!(first.read_head().await.status, 200);
    assert_eq!(first.read_chunk().await, Chunk::Data(b"first\n".to_vec()));

    let mut second = RawConn::connect(addr).await;
    second.send_request("GET", "/one", &[], b"").await;
    assert_eq!(
        second.read_head().await.status,
        429,
        "the open stream holds the route's only slot"
    );

    let start = Instant::now();
    let grace = Duration::from_secs(1);
    tokio::time::timeout(Duration::from_secs(5), server.shutdown(grace))
        .await
        .expect("shutdown within 5 s");
    let end = tokio::time::timeout(Duration::from_secs(5), first.read_chunk())
        .await
        .expect("the stream's end within 5 s");
    assert_eq!(
        end,
        Chunk::Eof,
        "a byte stream is cut, not ended as if complete"
    );
    assert!(dropped.load(SeqCst), "the stream was dropped");
    // Ended by the server's stream registry once the grace is over, not left to the
    // forced close after a further flush window (as long again).
    assert!(
        start.elapsed() < grace + grace * 3 / 4,
        "shutdown took {:?}",
        start.elapsed()
    );
}
