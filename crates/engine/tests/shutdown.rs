//! Graceful shutdown with live connections: an endless SSE stream, an idle keep-alive
//! connection, a finite response in flight, and an endless byte stream (cut, so that its
//! client sees it incomplete). Each test but the HTTP/2 one runs on both writers of the
//! wire (`hyper::…`, `direct::…`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use rat_engine::{
    App, ChunkedResponse, Event, QueueLimits, Request, SseResponse, StreamingResponse,
};
use support::{open_sse_on, serve, within, Chunk, RawConn, SseReader, Wire};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn app(wire: Wire) -> App {
    let mut app = App::new();
    wire.get(&mut app, "/plain", |_req| async { "plain" })
        .unwrap();
    wire.get(&mut app, "/forever", |_req| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            // Bounded: at most 60 s of events, and it stops when the stream closes.
            for i in 0..600 {
                if tx.send(&Event::data_only(i.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        sse
    })
    .unwrap();
    let bytes_forever = |_req: Request| async {
        let (res, tx) = StreamingResponse::channel("text/plain", QueueLimits::default());
        tokio::spawn(async move {
            // Bounded: at most 60 s of chunks, and it stops when the stream closes.
            for i in 0..600 {
                if tx.send(Bytes::from(format!("line {i}\n"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        res
    };
    wire.get(&mut app, "/bytes-forever", bytes_forever).unwrap();
    wire.get(&mut app, "/slow", |_req| async {
        ChunkedResponse::new()
            .add_chunk("one\n")
            .add_chunk("two\n")
            .add_chunk("three\n")
            .with_delay(Duration::from_millis(150))
    })
    .unwrap();
    app
}

async fn shutdown_closes_idle_connections_at_once_ends_streams_after_the_grace_and_refuses_new_ones(
    wire: Wire,
) {
    let server = serve(app(wire)).await;
    let addr = server.local_addr();

    let (sse, _) = open_sse_on(wire, addr, "/forever").await;
    let mut sse = SseReader::new(sse);
    sse.next_event().await.expect("the stream is live");

    let mut idle = RawConn::connect(addr).await;
    let (head, body) = idle.roundtrip("GET", "/plain", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (200, &b"plain"[..]));
    wire.assert_wrote(&head);
    assert!(
        !idle.closed_within(Duration::from_millis(100)).await,
        "keep-alive keeps the connection open"
    );
    support::eventually(Duration::from_secs(1), "two connections", || {
        server.metrics().snapshot().active_connections == 2
    })
    .await;

    let grace = Duration::from_millis(800);
    let t0 = Instant::now();
    let shutdown = tokio::spawn(server.shutdown(grace));

    // The idle connection is closed at once, long before the grace period ends.
    assert!(
        idle.closed_within(grace / 2).await,
        "the idle keep-alive connection was not closed"
    );
    let idle_closed = t0.elapsed();

    // The stream goes on during the grace period, then is ended cleanly.
    let during_grace = within(grace + Duration::from_secs(3), "the stream's end", async {
        let mut n = 0;
        while sse.next_event().await.is_some() {
            n += 1;
        }
        n
    })
    .await;
    let stream_closed = t0.elapsed();
    assert!(during_grace >= 1, "no events during the grace period");
    assert!(
        matches!(sse.ended, Some(Chunk::End)),
        "the stream was cut instead of ended: {:?}",
        sse.ended.as_ref().map(|c| matches!(c, Chunk::Eof))
    );

    within(
        grace + Duration::from_secs(3),
        "shutdown to return",
        shutdown,
    )
    .await
    .unwrap();
    let took = t0.elapsed();
    assert!(
        idle_closed < grace,
        "idle connection closed after {idle_closed:?}"
    );
    assert!(
        stream_closed >= grace / 2,
        "the stream ended before the grace period: {stream_closed:?}"
    );
    assert!(
        took < grace + Duration::from_secs(2),
        "shutdown took {took:?} for a grace of {grace:?}"
    );

    let refused = within(
        Duration::from_secs(2),
        "connect after shutdown",
        TcpStream::connect(addr),
    )
    .await;
    assert!(refused.is_err(), "a connection was accepted after shutdown");
}

async fn a_finite_response_in_flight_completes_during_the_grace_period(wire: Wire) {
    let server = serve(app(wire)).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request("GET", "/slow", &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    wire.assert_wrote(&head);
    let first = conn.read_chunk().await;
    assert_eq!(first, Chunk::Data(b"one\n".to_vec()));

    let t0 = Instant::now();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(3)));
    let rest = conn.read_chunked_body().await;
    assert_eq!(rest, b"two\nthree\n", "the response finished cleanly");
    // The connection then closes (no keep-alive during shutdown) and shutdown returns
    // without waiting for the whole grace period.
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    within(Duration::from_secs(2), "shutdown", shutdown)
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?}",
        t0.elapsed()
    );
}

async fn serve_until_shuts_down_when_the_signal_fires(wire: Wire) {
    let server = serve(app(wire)).await;
    let addr = server.local_addr();
    let (fire, signal) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve_until(
        async {
            let _ = signal.await;
        },
        Duration::from_millis(300),
    ));
    let ok = support::get(addr, "/plain").await;
    assert_eq!(ok.text(), "plain");
    assert!(!running.is_finished());
    fire.send(()).unwrap();
    within(Duration::from_secs(3), "serve_until to return", running)
        .await
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after the signal"
    );
}

/// A byte stream still open when the grace period ends gets what it queued and is then cut
/// without the last chunk: a client cannot take it for a complete response. (An SSE stream
/// ends cleanly instead: see the first test.)
async fn a_byte_stream_cut_by_the_grace_period_ends_without_the_last_chunk(wire: Wire) {
    {
        let path = "/bytes-forever";
        let server = serve(app(wire)).await;
        let mut conn = RawConn::connect(server.local_addr()).await;
        conn.send_request("GET", path, &[], b"").await;
        let head = conn.read_head().await;
        assert!(head.is_chunked(), "{path}: {head:?}");
        wire.assert_wrote(&head);
        assert_eq!(conn.read_chunk().await, Chunk::Data(b"line 0\n".to_vec()));
        let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(300)));
        let mut lines = 1;
        let last = within(Duration::from_secs(5), "the stream's end", async {
            loop {
                match conn.read_chunk().await {
                    Chunk::Data(d) => {
                        assert_eq!(d, format!("line {lines}\n").into_bytes(), "{path}");
                        lines += 1;
                    }
                    other => return other,
                }
            }
        })
        .await;
        assert_eq!(
            last,
            Chunk::Eof,
            "{path}: cut, not ended, after {lines} lines"
        );
        assert!(
            lines >= 2,
            "{path}: the stream went on during the grace period"
        );
        within(Duration::from_secs(3), "shutdown", shutdown)
            .await
            .unwrap();
    }
}

/// Over HTTP/2 the same stream is reset (RST_STREAM) after what it queued: the client's
/// body ends in an error, not a clean end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_h2_a_byte_stream_cut_by_the_grace_period_is_reset() {
    use http_body_util::BodyExt;
    let server = serve(app(Wire::Hyper)).await;
    let mut h2 = support::h2_connect(server.local_addr()).await;
    let req = http::Request::get("/bytes-forever")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let res = within(Duration::from_secs(5), "h2 head", h2.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"line 0\n");
    let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(300)));
    let end = within(Duration::from_secs(5), "the body's end", async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await;
    assert!(
        end.is_err(),
        "the stream was ended cleanly instead of reset"
    );
    within(Duration::from_secs(3), "shutdown", shutdown)
        .await
        .unwrap();
}

support::on_both_wires! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] shutdown_closes_idle_connections_at_once_ends_streams_after_the_grace_and_refuses_new_ones,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_finite_response_in_flight_completes_during_the_grace_period,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] serve_until_shuts_down_when_the_signal_fires,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_byte_stream_cut_by_the_grace_period_ends_without_the_last_chunk,
}
