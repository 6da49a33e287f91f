//! SSE over a real socket: events arrive while the stream is open, the producer learns
//! that the client left, idle streams get heartbeats, and framing survives the wire. Each
//! test runs on both writers of the wire (`hyper::…`, `direct::…`).

mod support;

use std::time::Duration;

use rat_engine::{App, Event, ServerConfig, SseResponse, SseSender};
use support::{open_sse_on, serve, serve_with, within, Chunk, SseReader, Wire};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An SSE route that sends `count` events `every` apart, then ends the stream.
fn paced_app(wire: Wire, count: usize, every: Duration) -> App {
    let mut app = App::new();
    wire.get(&mut app, "/ticks", move |_req| async move {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(every).await;
                }
                let e = Event::new()
                    .event("tick")
                    .id(i.to_string())
                    .unwrap()
                    .data(format!("tick {i}"));
                if tx.send(&e).await.is_err() {
                    return;
                }
            }
            tx.end();
        });
        sse
    })
    .unwrap();
    app
}

async fn sse_events_arrive_one_by_one_while_the_stream_is_open(wire: Wire) {
    const COUNT: usize = 6;
    let every = Duration::from_millis(100);
    let server = serve(paced_app(wire, COUNT, every)).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/ticks").await;
    let mut reader = SseReader::new(conn);
    let mut arrivals = Vec::new();
    while let Some(a) = reader.next_event().await {
        arrivals.push(a);
    }
    assert_eq!(
        reader.ended,
        Some(Chunk::End),
        "the stream ends cleanly after the last event"
    );
    let names: Vec<_> = arrivals
        .iter()
        .map(|a| (a.event.event_type.as_str(), a.event.data.as_str()))
        .collect();
    let expected: Vec<_> = (0..COUNT).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        names,
        expected
            .iter()
            .map(|d| ("tick", d.as_str()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        arrivals.last().unwrap().event.last_event_id,
        (COUNT - 1).to_string()
    );

    // The producer needs at least (COUNT-1) * 100 ms = 500 ms. Events delivered one by one
    // spread over most of that time; a buffered response would deliver them together at
    // the end. Generous bounds: the box may be busy.
    let times: Vec<Instant> = arrivals.iter().map(|a| a.at).collect();
    let span = support::spread(&times);
    assert!(
        span >= Duration::from_millis(300),
        "events arrived within {span:?} of each other: not streamed"
    );
    let distinct_reads = times.windows(2).filter(|w| w[1] > w[0]).count() + 1;
    assert!(
        distinct_reads >= 4,
        "only {distinct_reads} separate arrivals for {COUNT} paced events"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// An SSE route that hands its sender to the test and sends one `hello` event.
fn sender_app(wire: Wire, tx: mpsc::UnboundedSender<SseSender>) -> App {
    let mut app = App::new();
    wire.get(&mut app, "/hold", move |_req| {
        let tx = tx.clone();
        async move {
            let sse = SseResponse::new();
            sse.send_event("hello", "hi").unwrap();
            tx.send(sse.sender()).unwrap();
            sse
        }
    })
    .unwrap();
    app
}

async fn a_client_disconnect_resolves_closed_on_an_idle_producer_within_a_second(wire: Wire) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(sender_app(wire, tx)).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/hold").await;
    let mut reader = SseReader::new(conn);
    let first = reader.next_event().await.expect("the hello event");
    assert_eq!(first.event.event_type, "hello");
    let sender = within(Duration::from_secs(2), "the sender", rx.recv())
        .await
        .unwrap();
    assert!(!sender.is_closed(), "open while the client reads");

    drop(reader);
    let t0 = Instant::now();
    within(
        Duration::from_secs(1),
        "SseSender::closed() after the client left",
        sender.closed(),
    )
    .await;
    assert!(sender.is_closed());
    let err = sender
        .send(&Event::data_only("late"))
        .await
        .expect_err("send after the client left");
    assert!(err.is_closed(), "{err:?}");
    assert!(sender
        .write(&Event::data_only("late"))
        .unwrap_err()
        .is_closed());
    assert!(t0.elapsed() < Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1)).await;
}

async fn a_client_disconnect_makes_a_busy_producer_stop_within_a_second(wire: Wire) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut app = App::new();
    wire.get(&mut app, "/busy", move |_req| {
        let done_tx = done_tx.clone();
        async move {
            let sse = SseResponse::new();
            let tx = sse.sender();
            tokio::spawn(async move {
                // Bounded: 20 s worth of events at most.
                for i in 0..400 {
                    if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                        let _ = done_tx.send((i, Instant::now()));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            sse
        }
    })
    .unwrap();
    let server = serve(app).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/busy").await;
    let mut reader = SseReader::new(conn);
    for _ in 0..3 {
        reader.next_event().await.expect("an event");
    }
    drop(reader);
    let left = Instant::now();
    let (sent, stopped_at) = within(
        Duration::from_secs(1),
        "the producer to see the disconnect",
        done_rx.recv(),
    )
    .await
    .unwrap();
    assert!(sent >= 3, "the producer sent {sent} events before stopping");
    assert!(stopped_at.duration_since(left) < Duration::from_secs(1));
    support::eventually(Duration::from_secs(1), "no active streams", || {
        server.metrics().snapshot().active_streams == 0
    })
    .await;
    server.shutdown(Duration::from_secs(1)).await;
}

async fn an_idle_stream_gets_comment_heartbeats_and_no_events(wire: Wire) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let config = ServerConfig::default().heartbeat(Some(Duration::from_millis(150)));
    let mut app = App::new();
    wire.get(&mut app, "/idle", {
        let tx = tx.clone();
        move |_req| {
            let tx = tx.clone();
            async move {
                let sse = SseResponse::new();
                tx.send(sse.sender()).unwrap();
                sse
            }
        }
    })
    .unwrap();
    wire.get(&mut app, "/quiet", move |_req| {
        let tx = tx.clone();
        async move {
            let sse = SseResponse::new().heartbeat(None);
            tx.send(sse.sender()).unwrap();
            sse
        }
    })
    .unwrap();
    let server = serve_with(app, config).await;

    let (mut conn, _) = open_sse_on(wire, server.local_addr(), "/idle").await;
    let _keep_producer = rx.recv().await.unwrap();
    let t0 = Instant::now();
    let mut parser = support::sse::Parser::new();
    let mut raw = Vec::new();
    while parser.comments.len() < 2 {
        match within(Duration::from_secs(3), "a heartbeat", conn.read_chunk()).await {
            Chunk::Data(d) => {
                raw.extend_from_slice(&d);
                assert!(
                    parser.feed(&d).is_empty(),
                    "a heartbeat must not dispatch an event"
                );
            }
            other => panic!("stream ended: {other:?}"),
        }
    }
    // Two heartbeats 150 ms apart: not before the interval, well within 3 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "heartbeats came too early: {:?}",
        t0.elapsed()
    );
    assert!(
        raw.starts_with(b":"),
        "a heartbeat is a comment line: {raw:?}"
    );
    assert!(
        raw.iter().all(|b| *b == b':' || *b == b'\n' || *b == b' '),
        "only comment lines: {raw:?}"
    );

    // A stream that turned heartbeats off stays silent.
    let (mut quiet, _) = open_sse_on(wire, server.local_addr(), "/quiet").await;
    let _keep_quiet = rx.recv().await.unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(600), quiet.read_chunk()).await;
    assert!(
        silent.is_err(),
        "no bytes on a stream with heartbeats off: {silent:?}"
    );
    server.shutdown(Duration::from_millis(200)).await;
}

async fn heartbeats_wait_while_events_flow(wire: Wire) {
    let config = ServerConfig::default().heartbeat(Some(Duration::from_millis(300)));
    // Events every 60 ms for ~900 ms: the heartbeat timer keeps being pushed back.
    let server = serve_with(paced_app(wire, 15, Duration::from_millis(60)), config).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/ticks").await;
    let mut reader = SseReader::new(conn);
    let mut n = 0;
    while reader.next_event().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 15);
    assert!(
        reader.parser.comments.is_empty(),
        "heartbeats on a busy stream: {:?}",
        reader.parser.comments
    );
    server.shutdown(Duration::from_millis(200)).await;
}

async fn tricky_event_fields_survive_the_wire(wire: Wire) {
    let events = vec![
        Event::new()
            .event("update")
            .id("1")
            .unwrap()
            .data("{\"counter\":1}"),
        Event::data_only(""),
        Event::data_only("a\nb\r\nc\rd"),
        Event::data_only("  leading spaces"),
        Event::data_only("data: not a field"),
        Event::new().comment("just a comment"),
        Event::new().event("名前").data("ünïcødé ✓ 世界"),
        Event::new().retry(Duration::from_millis(2500)).data("x"),
        Event::new().id("").unwrap().data("id reset"),
    ];
    let to_send = events.clone();
    let mut app = App::new();
    wire.get(&mut app, "/tricky", move |_req| {
        let to_send = to_send.clone();
        async move {
            let sse = SseResponse::new();
            for e in &to_send {
                sse.write(e).unwrap();
            }
            sse.sender().end();
            sse
        }
    })
    .unwrap();
    let server = serve(app).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/tricky").await;
    let mut reader = SseReader::new(conn);
    let mut got = Vec::new();
    while let Some(a) = reader.next_event().await {
        got.push((a.event.event_type, a.event.data, a.event.last_event_id));
    }
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        got,
        vec![
            s("update", "{\"counter\":1}", "1"),
            s("message", "", "1"),
            s("message", "a\nb\nc\nd", "1"),
            s("message", "  leading spaces", "1"),
            s("message", "data: not a field", "1"),
            s("名前", "ünïcødé ✓ 世界", "1"),
            s("message", "x", "1"),
            s("message", "id reset", ""),
        ]
    );
    assert_eq!(reader.parser.comments, vec![" just a comment".to_string()]);
    assert_eq!(reader.parser.reconnection_time, Some(2500));
    assert_eq!(reader.ended, Some(Chunk::End));
    server.shutdown(Duration::from_millis(200)).await;
}

support::on_both_wires! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] sse_events_arrive_one_by_one_while_the_stream_is_open,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_client_disconnect_resolves_closed_on_an_idle_producer_within_a_second,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_client_disconnect_makes_a_busy_producer_stop_within_a_second,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] an_idle_stream_gets_comment_heartbeats_and_no_events,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] heartbeats_wait_while_events_flow,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] tricky_event_fields_survive_the_wire,
}
