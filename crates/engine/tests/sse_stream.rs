//! `Sse::new(stream)` over a real socket: events go out as the stream yields them, the
//! response ends with the stream, idle streams get heartbeats, an error cuts the
//! connection, and the stream is dropped when the client leaves (on hyper's path and on
//! the direct path of long-lived routes).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, Stream, StreamExt};
use rat_engine::{http::Method, App, Event, RouteOptions, Sse};
use support::{eventually, open_sse, serve, within, Chunk, SseReader, READ_DEADLINE};
use tokio::time::Instant;

const STEP: Duration = Duration::from_millis(150);

/// Sets its flag when dropped: moved into a stream, it tells when the stream is gone.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Yields `first`, then nothing ever again, holding `flag` until dropped.
fn one_then_idle(first: Event, flag: DropFlag) -> impl Stream<Item = Event> + Send {
    stream::once(async move { first }).chain(stream::poll_fn(move |_| {
        let _held = &flag;
        std::task::Poll::Pending
    }))
}

struct Fixture {
    dropped: Arc<AtomicBool>,
    dropped_direct: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
}

fn app() -> (App, Fixture) {
    let fx = Fixture {
        dropped: Arc::default(),
        dropped_direct: Arc::default(),
        polls: Arc::default(),
    };
    let mut app = App::new();
    let polls = fx.polls.clone();
    app.get("/paced", move |_req| {
        let polls = polls.clone();
        async move {
            let events = stream::iter(0..3u32).then(move |i| {
                polls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if i > 0 {
                        tokio::time::sleep(STEP).await;
                    }
                    let ev = match i {
                        0 => Event::new().event("ping"),
                        _ => Event::new()
                            .id(i.to_string())
                            .unwrap()
                            .data(format!("n{i}")),
                    };
                    Ok::<_, std::convert::Infallible>(ev)
                }
            });
            Sse::new(events).heartbeat(None)
        }
    })
    .unwrap();
    app.get("/beat", |_req| async {
        let flag = DropFlag(Arc::default());
        Sse::new(one_then_idle(Event::data_only("first"), flag))
            .heartbeat(Some(Duration::from_millis(200)))
    })
    .unwrap();
    app.get("/fails", |_req| async {
        let items = vec![Ok(Event::data_only("ok")), Err("the source failed")];
        // The error comes once the event before it has been written.
        let items = stream::iter(items).then(|item| async move {
            if item.is_err() {
                tokio::time::sleep(STEP).await;
            }
            item
        });
        Sse::new(items).heartbeat(None)
    })
    .unwrap();
    let dropped = fx.dropped.clone();
    app.get("/idle", move |_req| {
        let flag = DropFlag(dropped.clone());
        async move { Sse::new(one_then_idle(Event::data_only("hello"), flag)).heartbeat(None) }
    })
    .unwrap();
    let dropped = fx.dropped_direct.clone();
    let direct = move |_req| {
        let flag = DropFlag(dropped.clone());
        async move { Sse::new(one_then_idle(Event::data_only("hello"), flag)).heartbeat(None) }
    };
    app.route_with(
        Method::GET,
        "/idle-direct",
        Arc::new(direct),
        RouteOptions {
            long_lived: true,
            stream: true,
            ..RouteOptions::default()
        },
    )
    .unwrap();
    (app, fx)
}

#[tokio::test]
async fn events_go_out_as_the_stream_yields_them_and_the_response_ends_with_it() {
    let (app, fx) = app();
    let server = serve(app).await;
    let (conn, _head) = open_sse(server.local_addr(), "/paced").await;
    let mut reader = SseReader::new(conn);

    let first = within(READ_DEADLINE, "the first event", reader.next_event())
        .await
        .expect("an event");
    // A named event without data still carries a data line, so EventSource dispatches it.
    assert_eq!(first.event.event_type, "ping");
    assert_eq!(first.event.data, "");
    let mut arrivals = vec![first.at];
    for i in 1..3 {
        let ev = within(READ_DEADLINE, "an event", reader.next_event())
            .await
            .expect("an event");
        assert_eq!(ev.event.event_type, "message");
        assert_eq!(ev.event.data, format!("n{i}"));
        assert_eq!(ev.event.last_event_id, i.to_string());
        arrivals.push(ev.at);
    }
    // Pulled one at a time: each event arrives about a step after the one before.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= STEP - Duration::from_millis(20), "gap {gap:?}");
    }
    assert!(within(READ_DEADLINE, "the end", reader.next_event())
        .await
        .is_none());
    assert_eq!(reader.ended, Some(Chunk::End), "a clean end of the body");
    assert_eq!(fx.polls.load(Ordering::SeqCst), 3);
    assert_eq!(server.metrics().snapshot().events_sent, 3);
}

#[tokio::test]
async fn the_frames_on_the_wire_are_the_events_encoding() {
    let (app, _fx) = app();
    let server = serve(app).await;
    let (mut conn, head) = open_sse(server.local_addr(), "/paced").await;
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    let mut body = Vec::new();
    loop {
        match within(READ_DEADLINE, "a chunk", conn.read_chunk()).await {
            Chunk::Data(d) => body.extend_from_slice(&d),
            Chunk::End => break,
            Chunk::Eof => panic!("the body was cut: {body:?}"),
        }
    }
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "event: ping\ndata:\n\nid: 1\ndata: n1\n\nid: 2\ndata: n2\n\n"
    );
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats() {
    let (app, _fx) = app();
    let server = serve(app).await;
    let (conn, _head) = open_sse(server.local_addr(), "/beat").await;
    let mut reader = SseReader::new(conn);
    let first = within(READ_DEADLINE, "the first event", reader.next_event())
        .await
        .expect("an event");
    assert_eq!(first.event.data, "first");
    let start = Instant::now();
    let mut beats = 0;
    while beats < 2 {
        match within(READ_DEADLINE, "a heartbeat", reader.conn.read_chunk()).await {
            Chunk::Data(d) => {
                assert_eq!(&d[..], b":\n\n");
                beats += 1;
            }
            other => panic!("the stream ended: {other:?}"),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(380),
        "two heartbeats 200 ms apart took {took:?}"
    );
}

#[tokio::test]
async fn an_error_item_cuts_the_connection_after_the_events_before_it() {
    let (app, _fx) = app();
    let server = serve(app).await;
    let (conn, _head) = open_sse(server.local_addr(), "/fails").await;
    let mut reader = SseReader::new(conn);
    let ev = within(READ_DEADLINE, "the event", reader.next_event())
        .await
        .expect("an event");
    assert_eq!(ev.event.data, "ok");
    assert!(within(READ_DEADLINE, "the end", reader.next_event())
        .await
        .is_none());
    assert_eq!(
        reader.ended,
        Some(Chunk::Eof),
        "no clean end after an error"
    );
}

async fn leave_and_check_dropped(path: &str, dropped: impl Fn(&Fixture) -> bool) {
    let (app, fx) = app();
    let server = serve(app).await;
    let (conn, _head) = open_sse(server.local_addr(), path).await;
    let mut reader = SseReader::new(conn);
    let ev = within(READ_DEADLINE, "the event", reader.next_event())
        .await
        .expect("an event");
    assert_eq!(ev.event.data, "hello");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dropped(&fx), "the stream lives while the client reads");
    drop(reader);
    eventually(READ_DEADLINE, "the stream to be dropped", || dropped(&fx)).await;
    eventually(READ_DEADLINE, "no stream left open", || {
        server.metrics().snapshot().active_streams == 0
    })
    .await;
}

#[tokio::test]
async fn the_stream_is_dropped_when_the_client_leaves() {
    leave_and_check_dropped("/idle", |fx| fx.dropped.load(Ordering::SeqCst)).await;
}

#[tokio::test]
async fn the_stream_is_dropped_when_the_client_leaves_a_long_lived_route() {
    leave_and_check_dropped("/idle-direct", |fx| {
        fx.dropped_direct.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_an_open_stream_cleanly() {
    let (app, fx) = app();
    let server = serve(app).await;
    let (conn, _head) = open_sse(server.local_addr(), "/idle-direct").await;
    let mut reader = SseReader::new(conn);
    let ev = within(READ_DEADLINE, "the event", reader.next_event())
        .await
        .expect("an event");
    assert_eq!(ev.event.data, "hello");
    let (conn, _head) = open_sse(server.local_addr(), "/idle").await;
    let mut on_hyper = SseReader::new(conn);
    assert!(within(READ_DEADLINE, "the event", on_hyper.next_event())
        .await
        .is_some());
    within(
        READ_DEADLINE,
        "the shutdown",
        server.shutdown(Duration::from_millis(200)),
    )
    .await;
    for reader in [&mut reader, &mut on_hyper] {
        assert!(within(READ_DEADLINE, "the end", reader.next_event())
            .await
            .is_none());
        assert_eq!(reader.ended, Some(Chunk::End), "an SSE stream ends cleanly");
    }
    assert!(fx.dropped.load(Ordering::SeqCst));
    assert!(fx.dropped_direct.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_route_stream_limit_counts_open_event_streams() {
    let mut app = App::new();
    let limited = |_req| async {
        let flag = DropFlag(Arc::default());
        Sse::new(one_then_idle(Event::data_only("in"), flag)).heartbeat(None)
    };
    app.route_with(
        Method::GET,
        "/one",
        Arc::new(limited),
        RouteOptions {
            stream: true,
            max_streams: Some(1),
            ..RouteOptions::default()
        },
    )
    .unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();
    let (conn, _head) = open_sse(addr, "/one").await;
    let mut first = SseReader::new(conn);
    assert!(within(READ_DEADLINE, "the event", first.next_event())
        .await
        .is_some());
    let second = support::get(addr, "/one").await;
    assert_eq!(
        second.status, 429,
        "the limit holds while the first is open"
    );
    drop(first);
    let mut status = 0;
    for _ in 0..100 {
        let mut conn = support::RawConn::connect(addr).await;
        conn.send_request("GET", "/one", &[], b"").await;
        status = within(READ_DEADLINE, "a head", conn.read_head())
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 200,
        "the slot comes back once the first client left"
    );
}
