//! Long-lived routes (`RouteOptions::long_lived`) are served on the engine's direct
//! HTTP/1.1 path: SSE framing on the wire, client disconnects, keep-alive and pipelining
//! across the hand-over to hyper, HTTP/1.0, errors before a stream, what still goes
//! through hyper (HEAD, POST, other routes, malformed heads, h2c), and graceful shutdown.
//!
//! Which path answered is visible in the order of the last response headers: hyper
//! writes `transfer-encoding` (or `content-length`) before the `date` it adds, the
//! direct path writes `date` first.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use rat_engine::{
    App, Channel, ChannelOptions, Error, Event, QueueLimits, Request, ServerConfig, SseResponse,
    SseSender, StreamSender, StreamingResponse,
};
use support::{
    eventually, long_lived, open_sse, seq_chunk, serve_with, spawn_seq_producer, within, Chunk,
    Head, RawConn, SseReader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// True when the direct path wrote this head (see the module doc).
fn direct(head: &Head) -> bool {
    support::wrote_directly(head)
}

struct Fixture {
    server: rat_engine::ServerHandle,
    senders: mpsc::UnboundedReceiver<SseSender>,
    channel: Channel,
}

/// `/events` (long-lived): sends `hello`, then hands its sender to the test.
/// `/count` (long-lived): three events and the end. `/hello`: plain text.
/// `/fail` and `/bad` (long-lived): an error before any stream. `/ch`: a channel.
async fn start(config: ServerConfig) -> Fixture {
    let (tx, senders) = mpsc::unbounded_channel();
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    app.get("/plain-sse", |_req| async {
        let sse = SseResponse::new();
        sse.send_event("x", "1").unwrap();
        sse.sender().end();
        sse
    })
    .unwrap();
    long_lived(&mut app, "/events", move |_req: Request| {
        let tx = tx.clone();
        async move {
            let sse = SseResponse::new();
            sse.send_event("hello", "first").unwrap();
            let _ = tx.send(sse.sender());
            sse
        }
    });
    long_lived(&mut app, "/count", |_req: Request| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                    return;
                }
            }
            tx.end();
        });
        sse
    });
    long_lived(&mut app, "/fail", |_req: Request| async {
        Err::<SseResponse, _>(Error::handler("exploded"))
    });
    long_lived(&mut app, "/bad", |_req: Request| async {
        (StatusCode::BAD_REQUEST, "no such topic")
    });
    let channel = Channel::new("ch", ChannelOptions::default());
    long_lived(&mut app, "/ch", channel.clone());
    Fixture {
        server: serve_with(app, config).await,
        senders,
        channel,
    }
}

async fn next_sender(f: &mut Fixture) -> SseSender {
    within(Duration::from_secs(2), "the producer", f.senders.recv())
        .await
        .unwrap()
}

#[tokio::test]
async fn sse_is_served_directly_with_date_and_chunked_framing() {
    let f = start(ServerConfig::default()).await;
    let (conn, head) = open_sse(f.server.local_addr(), "/count").await;
    assert!(direct(&head), "served directly: {head:?}");
    assert!(head.get("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    assert_eq!(head.get("connection"), None);
    let mut sse = SseReader::new(conn);
    for want in ["n0", "n1", "n2"] {
        let ev = within(Duration::from_secs(2), "an event", sse.next_event())
            .await
            .expect("an event");
        assert_eq!(ev.event.data, want);
    }
    assert!(sse.next_event().await.is_none());
    assert_eq!(sse.ended, Some(Chunk::End), "a clean chunked end");
    let m = f.server.metrics().snapshot();
    assert_eq!((m.total_requests, m.total_streams), (1, 1));
}

#[tokio::test]
async fn a_client_that_goes_away_drops_the_stream_at_once() {
    let mut f = start(ServerConfig::default()).await;
    let addr = f.server.local_addr();
    let (conn, _) = open_sse(addr, "/events").await;
    let tx = next_sender(&mut f).await;
    drop(conn);
    within(
        Duration::from_secs(1),
        "the producer to see the close",
        tx.closed(),
    )
    .await;

    let (conn, head) = open_sse(addr, "/ch").await;
    assert!(direct(&head));
    eventually(Duration::from_secs(1), "one subscriber", || {
        f.channel.subscribers() == 1
    })
    .await;
    f.channel.publish(Event::data_only("to all")).unwrap();
    let mut sse = SseReader::new(conn);
    let ev = within(Duration::from_secs(2), "the event", sse.next_event())
        .await
        .unwrap();
    assert_eq!(ev.event.data, "to all");
    drop(sse);
    eventually(Duration::from_secs(1), "no subscriber", || {
        f.channel.subscribers() == 0
    })
    .await;
    eventually(
        Duration::from_secs(1),
        "no active connection or stream",
        || {
            let m = f.server.metrics().snapshot();
            m.active_connections == 0 && m.active_streams == 0
        },
    )
    .await;
}

#[tokio::test]
async fn a_channel_counts_the_events_and_bytes_its_sweep_writes() {
    let f = start(ServerConfig::default()).await;
    let addr = f.server.local_addr();
    let (a, head) = open_sse(addr, "/ch").await;
    assert!(direct(&head));
    let (b, _) = open_sse(addr, "/ch").await;
    eventually(Duration::from_secs(1), "two subscribers", || {
        f.channel.subscribers() == 2
    })
    .await;
    let before = f.server.metrics().snapshot();
    for i in 0..3 {
        f.channel
            .publish(Event::data_only(format!("e{i}")))
            .unwrap();
    }
    // Swept (straight to the sockets, which have room), then closed: that ends both
    // streams, so each body can be read to its end.
    eventually(Duration::from_secs(2), "the sweep", || {
        f.server.metrics().snapshot().events_sent - before.events_sent == 6
    })
    .await;
    f.channel.close();
    let mut wire = 0;
    for mut conn in [a, b] {
        let body = within(Duration::from_secs(2), "the body", conn.read_chunked_body()).await;
        let (events, _) = support::sse::Parser::parse_all(&body);
        let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["e0", "e1", "e2"]);
        wire += body.len() as u64;
    }
    let m = f.server.metrics().snapshot();
    assert_eq!(m.events_sent - before.events_sent, 6, "{m:?}");
    assert_eq!(
        m.bytes_sent - before.bytes_sent,
        wire,
        "every body byte is counted once, written through or queued: {m:?}"
    );
}

#[tokio::test]
async fn keep_alive_and_pipelining_cross_over_to_hyper() {
    let mut f = start(ServerConfig::default()).await;
    let (mut conn, _) = open_sse(f.server.local_addr(), "/events").await;
    let tx = next_sender(&mut f).await;
    // A request pipelined while the stream is open: answered after it.
    conn.send_request("GET", "/hello", &[], b"").await;
    tx.send_data("more").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.end();
    let body = conn.read_chunked_body().await;
    let (events, _) = support::sse::Parser::parse_all(&body);
    let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["first", "more"]);
    let head = conn.read_head().await;
    assert!(!direct(&head), "a plain route goes to hyper");
    assert_eq!(conn.read_body(&head).await, b"hello");
    // Still open: another plain request, then a long-lived one (hyper serves it now).
    let (head, body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (200, &b"hello"[..]));
    let (head, body) = conn.roundtrip("GET", "/count", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(support::sse::Parser::parse_all(&body).0.len(), 3);
    let m = f.server.metrics().snapshot();
    assert_eq!((m.total_connections, m.total_requests), (1, 4));
}

#[tokio::test]
async fn direct_requests_follow_each_other_on_one_connection() {
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    for _ in 0..3 {
        let (head, body) = conn.roundtrip("GET", "/count", &[], b"").await;
        assert!(direct(&head));
        assert_eq!(support::sse::Parser::parse_all(&body).0.len(), 3);
    }
    // Two pipelined at once.
    let mut both = b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    both.extend_from_slice(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send_raw(&both).await;
    let head = conn.read_head().await;
    assert_eq!(
        support::sse::Parser::parse_all(&conn.read_body(&head).await)
            .0
            .len(),
        3
    );
    let head = conn.read_head().await;
    assert_eq!(head.status, 400);
    assert!(direct(&head));
    assert_eq!(conn.read_body(&head).await, b"no such topic");
    assert_eq!(f.server.metrics().snapshot().total_connections, 1);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    let (head, _) = conn
        .roundtrip("GET", "/count", &[("Connection", "close")], b"")
        .await;
    assert_eq!(head.get("connection"), Some("close"));
    assert!(conn.closed_within(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn head_post_and_other_routes_go_through_hyper() {
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    conn.send_request("HEAD", "/count", &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    let (head, body) = conn.roundtrip("POST", "/count", &[], b"x").await;
    assert_eq!(head.status, 405);
    assert!(!direct(&head));
    assert!(String::from_utf8(body).unwrap().contains("allowed: GET"));
    let (head, body) = conn.roundtrip("GET", "/plain-sse", &[], b"").await;
    assert!(!direct(&head), "not long-lived: hyper");
    assert_eq!(support::sse::Parser::parse_all(&body).0.len(), 1);
    // A GET with a body, or expecting 100-continue, is hyper's too.
    let (head, _) = conn
        .roundtrip("GET", "/count", &[("Content-Length", "2")], b"ab")
        .await;
    assert!(!direct(&head));
    let (head, _) = conn.roundtrip("GET", "/nope", &[], b"").await;
    assert_eq!(head.status, 404);
    let m = f.server.metrics().snapshot();
    assert_eq!((m.total_requests, m.rejected_requests), (5, 2));
}

#[tokio::test]
async fn http_1_0_streams_are_close_delimited() {
    let f = start(ServerConfig::default()).await;
    let mut stream = TcpStream::connect(f.server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /count HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    within(
        Duration::from_secs(2),
        "the whole response and the close",
        stream.read_to_end(&mut all),
    )
    .await
    .unwrap();
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"));
    assert!(!head.to_ascii_lowercase().contains("content-length"));
    let (events, _) = support::sse::Parser::parse_all(body.as_bytes());
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn errors_before_the_stream_have_a_length_and_keep_the_connection() {
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    let (head, body) = conn.roundtrip("GET", "/fail", &[], b"").await;
    assert_eq!(head.status, 500);
    assert!(direct(&head));
    assert_eq!(head.content_length(), Some(body.len()));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 500);
    let (head, body) = conn.roundtrip("GET", "/bad", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (400, &b"no such topic"[..]));
    let (head, body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (200, &b"hello"[..]));
}

#[tokio::test]
async fn malformed_heads_still_get_hyper_s_400() {
    let f = start(ServerConfig::default()).await;
    for raw in [
        &b"GET /count HTTP/1.1\r\nbad header line\r\n\r\n"[..],
        b"garbage\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(f.server.local_addr()).await;
        conn.send_raw(raw).await;
        let head = conn.read_head().await;
        assert_eq!(head.status, 400, "{:?}", String::from_utf8_lossy(raw));
    }
    // A head split over several writes is still served directly.
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    conn.send_raw(b"GET /co").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.send_raw(b"unt HTTP/1.1\r\nHost: x\r\n").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.send_raw(b"\r\n").await;
    let head = conn.read_head().await;
    assert!(direct(&head));
    assert_eq!(
        support::sse::Parser::parse_all(&conn.read_body(&head).await)
            .0
            .len(),
        3
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_still_works_on_long_lived_routes() {
    let f = start(ServerConfig::default()).await;
    let mut h2 = support::h2_connect(f.server.local_addr()).await;
    let req = http::Request::builder()
        .uri(format!("http://{}/count", f.server.local_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within(Duration::from_secs(2), "h2 response", h2.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = within(Duration::from_secs(2), "h2 body", res.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(support::sse::Parser::parse_all(&body).0.len(), 3);
}

#[tokio::test]
async fn graceful_shutdown_ends_a_direct_stream_cleanly_and_closes_idle_ones() {
    let mut f = start(ServerConfig::default()).await;
    let addr = f.server.local_addr();
    let (conn, _) = open_sse(addr, "/events").await;
    let _tx = next_sender(&mut f).await;
    let mut idle = RawConn::connect(addr).await;
    let (head, _) = idle.roundtrip("GET", "/count", &[], b"").await;
    assert!(direct(&head));
    let shutdown = tokio::spawn(f.server.shutdown(Duration::from_millis(300)));
    assert!(
        idle.closed_within(Duration::from_millis(200)).await,
        "an idle keep-alive connection closes at once"
    );
    let mut sse = SseReader::new(conn);
    let ev = within(Duration::from_secs(2), "the first event", sse.next_event())
        .await
        .unwrap();
    assert_eq!(ev.event.event_type, "hello");
    assert!(within(Duration::from_secs(2), "the end", sse.next_event())
        .await
        .is_none());
    assert_eq!(sse.ended, Some(Chunk::End), "ended with the last chunk");
    assert!(sse.conn.closed_within(Duration::from_secs(1)).await);
    within(Duration::from_secs(3), "shutdown", shutdown)
        .await
        .unwrap();
}

#[tokio::test]
async fn metrics_count_direct_connections_like_hyper_ones() {
    let f = start(ServerConfig::default()).await;
    let addr = f.server.local_addr();
    let (a, _) = open_sse(addr, "/events").await;
    let (b, _) = open_sse(addr, "/ch").await;
    let m = f.server.metrics().snapshot();
    assert_eq!(
        (m.active_connections, m.total_connections, m.active_streams),
        (2, 2, 2)
    );
    drop((a, b));
    eventually(Duration::from_secs(1), "both gone", || {
        let m = f.server.metrics().snapshot();
        m.active_connections == 0 && m.active_streams == 0
    })
    .await;
}

// ---- backpressure and aborts on the direct path ----

const CHUNK: usize = support::SEQ_CHUNK;

async fn firehose(
    limits: QueueLimits,
) -> (
    rat_engine::ServerHandle,
    mpsc::UnboundedReceiver<StreamSender>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut app = App::new();
    long_lived(&mut app, "/firehose", move |_req: Request| {
        let tx = tx.clone();
        async move {
            let (res, sender) = StreamingResponse::channel("application/octet-stream", limits);
            tx.send(sender).unwrap();
            res
        }
    });
    (serve_with(app, ServerConfig::default()).await, rx)
}

/// Connects with a small receive buffer and reads only the response head.
async fn paused_reader(addr: std::net::SocketAddr) -> RawConn {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = RawConn::from_stream(socket.connect(addr).await.unwrap());
    conn.send_request("GET", "/firehose", &[], b"").await;
    let head = conn.read_head().await;
    assert!(direct(&head));
    conn
}

/// A `/firehose` stream with these limits, its paused reader and its producer's sender.
struct PausedFirehose {
    server: rat_engine::ServerHandle,
    senders: mpsc::UnboundedReceiver<StreamSender>,
    conn: RawConn,
    tx: StreamSender,
}

async fn paused_firehose(high_water_mark: usize, max_buffered: usize) -> PausedFirehose {
    let (server, mut senders) = firehose(QueueLimits {
        high_water_mark,
        max_buffered,
    })
    .await;
    let conn = paused_reader(server.local_addr()).await;
    let tx = within(Duration::from_secs(2), "the sender", senders.recv())
        .await
        .unwrap();
    PausedFirehose {
        server,
        senders,
        conn,
        tx,
    }
}

/// Reads the whole body and checks that it is `seq_chunk(0..n)` in order.
async fn expect_seq_body(conn: &mut RawConn, n: u64) {
    let body = within(
        Duration::from_secs(10),
        "the body",
        conn.read_chunked_body(),
    )
    .await;
    assert_eq!(body.len(), n as usize * CHUNK);
    for (i, c) in body.chunks(CHUNK).enumerate() {
        assert_eq!(c, &seq_chunk(i as u64)[..], "chunk {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_holds_the_producer_back_and_then_gets_everything_in_order() {
    let high_water = 16 * CHUNK;
    let PausedFirehose {
        server: _server,
        mut conn,
        tx,
        ..
    } = paused_firehose(high_water, 64 * high_water).await;
    let mut seq = 0u64;
    let blocked_at = loop {
        assert!(seq < 32 * 1024, "the producer was never held back");
        match tokio::time::timeout(Duration::from_millis(300), tx.send(seq_chunk(seq))).await {
            Ok(Ok(())) => seq += 1,
            Ok(Err(e)) => panic!("the stream closed under a paused reader: {e:?}"),
            Err(_) => break seq,
        }
    };
    assert!(tx.buffered() <= high_water);
    assert!(!tx.is_closed(), "a slow reader is not a disconnect");
    let producer = spawn_seq_producer(tx.clone(), blocked_at..blocked_at + 64);
    expect_seq_body(&mut conn, blocked_at + 64).await;
    producer.await.unwrap();
}

/// On a current-thread runtime the connection task cannot run while the test writes, so
/// `buffered()` shows whether a write went to the socket (0) or to the queue.
#[tokio::test]
async fn writes_go_straight_to_the_socket_and_keep_their_order_once_it_fills() {
    let high_water = 4 * CHUNK;
    let PausedFirehose {
        server: _server,
        mut senders,
        mut conn,
        tx,
    } = paused_firehose(high_water, 4096 * CHUNK).await;
    // Nothing queued or unwritten: the producer writes to the socket itself.
    assert!(tx.write_slice(&seq_chunk(0)).unwrap());
    assert_eq!(tx.buffered(), 0, "the write went straight to the socket");
    // The reader is paused: the socket fills. The rest of the write it took in part is
    // queued (already framed), and the producer is told to wait until the connection
    // takes it, though the queue is below its mark.
    let mut seq = 1u64;
    while tx.write_slice(&seq_chunk(seq)).unwrap() {
        seq += 1;
        assert!(seq < 100_000, "the socket never filled");
    }
    seq += 1;
    let rest = tx.buffered();
    assert!(
        rest > 0 && rest < high_water,
        "the rest of one write: {rest}"
    );
    assert!(tx.try_send(seq_chunk(seq)).unwrap_err().is_full());
    // Writes that ignore it are queued behind the rest (Node `write` style).
    while tx.buffered() < high_water + 4 * CHUNK {
        assert!(!tx.write(seq_chunk(seq)).unwrap());
        seq += 1;
    }
    let producer = spawn_seq_producer(tx.clone(), seq..seq + 64);
    expect_seq_body(&mut conn, seq + 64).await;
    producer.await.unwrap();
    // Once the queue drained, writes go to the socket again (a new response: the sink
    // went with the last one, which ended).
    conn.send_request("GET", "/firehose", &[], b"").await;
    assert!(direct(&conn.read_head().await));
    let tx = within(Duration::from_secs(2), "the sender", senders.recv())
        .await
        .unwrap();
    assert!(tx.write_slice(b"again").unwrap());
    assert_eq!(tx.buffered(), 0);
    tx.end();
    assert_eq!(conn.read_chunked_body().await, b"again");
}

/// `write_slices` is the TS stream's path for the byte writes of one turn: one vectored
/// send per group of buffers while the socket has room; once it fills, the rest of the
/// group and every later buffer are queued behind it (already framed), and the reader
/// gets every byte in order, the chunk framing intact.
#[tokio::test]
async fn write_slices_send_groups_straight_to_the_socket_and_queue_the_rest_in_order() {
    let high_water = 4 * CHUNK;
    let PausedFirehose {
        server: _server,
        mut conn,
        tx,
        ..
    } = paused_firehose(high_water, 4096 * CHUNK).await;
    let slices = |from: u64, n: u64| (from..from + n).map(seq_chunk).collect::<Vec<_>>();
    let first = slices(0, 3);
    assert!(tx
        .write_slices(&first.iter().map(|c| &c[..]).collect::<Vec<_>>())
        .unwrap());
    assert_eq!(tx.buffered(), 0, "the three went straight to the socket");
    // More buffers per call than one send takes (MAX_VECTORED), until the socket fills.
    let per_call = rat_engine::stream::MAX_VECTORED as u64 + 36;
    let mut seq = 3u64;
    loop {
        let batch = slices(seq, per_call);
        seq += per_call;
        let below = tx
            .write_slices(&batch.iter().map(|c| &c[..]).collect::<Vec<_>>())
            .unwrap();
        if !below {
            break;
        }
        assert!(seq < 100_000, "the socket never filled");
    }
    let queued = tx.buffered();
    assert!(queued > 0);
    // At most one call's bytes (and their framing) past the mark.
    assert!(
        queued <= high_water + per_call as usize * CHUNK + 32,
        "queued {queued}"
    );
    let producer = spawn_seq_producer(tx.clone(), seq..seq + 64);
    expect_seq_body(&mut conn, seq + 64).await;
    producer.await.unwrap();
}

/// A server whose `/ch` subscribes each request to a channel with these options, and one
/// subscriber whose socket has a 4 KiB receive buffer and which has read only the head:
/// the channel, the server, that connection and its stream's sender.
async fn channel_and_a_paused_subscriber(
    options: ChannelOptions,
) -> (Channel, rat_engine::ServerHandle, RawConn, SseSender) {
    let channel = Channel::new("ch", options);
    let (tx, mut senders) = mpsc::unbounded_channel();
    let mut app = App::new();
    let ch = channel.clone();
    long_lived(&mut app, "/ch", move |_req: Request| {
        let (tx, ch) = (tx.clone(), ch.clone());
        async move {
            let sse = SseResponse::with_limits(ch.options().queue);
            ch.subscribe(sse.sender().stream(), None);
            let _ = tx.send(sse.sender());
            sse
        }
    });
    let server = serve_with(app, ServerConfig::default().heartbeat(None)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = RawConn::from_stream(socket.connect(server.local_addr()).await.unwrap());
    conn.send_request("GET", "/ch", &[("Accept", "text/event-stream")], b"")
        .await;
    assert!(direct(&conn.read_head().await));
    let sender = within(Duration::from_secs(2), "the sender", senders.recv())
        .await
        .unwrap();
    (channel, server, conn, sender)
}

/// A stream that writes events of its own (through the socket) and also gets a channel's:
/// when a publish finds its queue full, dropping the oldest events never drops the rest of
/// a write that is half on the wire, so what arrives still parses as whole events.
#[tokio::test]
async fn dropping_the_oldest_events_keeps_a_write_that_is_half_on_the_wire() {
    let (channel, _server, conn, own) = channel_and_a_paused_subscriber(ChannelOptions {
        history: 0,
        slow_client: rat_engine::SlowClient::DropOldest,
        queue: QueueLimits {
            high_water_mark: 8 * 1024,
            max_buffered: 64 * 1024,
        },
        ..ChannelOptions::default()
    })
    .await;
    // The stream's own events go through the socket until it takes one only in part.
    let data = "x".repeat(200);
    let mut n = 0u64;
    while own.write(&Event::data_only(format!("{n} {data}"))).unwrap() {
        n += 1;
        assert!(n < 500_000, "the socket never filled");
    }
    n += 1;
    assert!(own.stream().buffered() > 0, "the rest of a write is queued");
    // The channel's events fill the queue behind it; the oldest are dropped.
    let mut more = 100;
    while more > 0 {
        channel
            .publish(Event::data_only(format!("{n} {data}")))
            .unwrap();
        n += 1;
        if channel.metrics().dropped > 0 {
            more -= 1;
        }
        assert!(n < 500_000, "the subscriber never fell behind");
    }
    channel
        .publish(Event::new().event("last").data("end"))
        .unwrap();
    let mut reader = SseReader::new(conn);
    let mut last = None::<u64>;
    loop {
        let a = within(Duration::from_secs(10), "an event", reader.next_event())
            .await
            .expect("the stream stays open");
        if a.event.event_type == "last" {
            break;
        }
        let (i, rest) = a.event.data.split_once(' ').expect("a whole event");
        assert_eq!(rest, data, "event data intact");
        let i: u64 = i.parse().unwrap();
        assert!(last.is_none_or(|l| i > l), "in order: {i} after {last:?}");
        last = Some(i);
    }
    assert_eq!(last, Some(n - 1), "the newest events arrive");
}

/// A channel's fan-out task writes each publish straight to the subscribers' sockets. One
/// subscriber does not read, so its socket soon takes a write only in part: the rest is
/// queued and later events wait behind it. Every subscriber, that one included once it
/// reads, gets every event whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_writes_to_sockets_and_a_write_taken_in_part_still_arrives_whole() {
    let (channel, server, slow, slow_tx) = channel_and_a_paused_subscriber(ChannelOptions {
        history: 0,
        queue: QueueLimits {
            high_water_mark: 1 << 20,
            max_buffered: 4 << 20,
        },
        ..ChannelOptions::default()
    })
    .await;
    let mut readers = Vec::new();
    for _ in 0..20 {
        let (conn, head) = open_sse(server.local_addr(), "/ch").await;
        assert!(direct(&head));
        let mut reader = SseReader::new(conn);
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(a) = reader.next_event().await {
                if a.event.event_type == "last" {
                    break;
                }
                got.push(a.event.data);
            }
            got
        }));
    }
    eventually(Duration::from_secs(5), "21 subscribers", || {
        channel.subscribers() == 21
    })
    .await;
    let data = "x".repeat(16 * 1024);
    let mut n = 0u64;
    // Until the slow socket is full and something waits in its queue.
    while slow_tx.stream().buffered() == 0 {
        channel
            .publish(Event::data_only(format!("{n} {data}")))
            .unwrap();
        n += 1;
        assert!(n < 1000, "the slow socket never filled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..20 {
        channel
            .publish(Event::data_only(format!("{n} {data}")))
            .unwrap();
        n += 1;
    }
    channel
        .publish(Event::new().event("last").data("end"))
        .unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("{i} {data}")).collect();
    for r in readers {
        let got = within(Duration::from_secs(10), "a reader", r)
            .await
            .unwrap();
        assert!(
            got == want,
            "a reader got {} of {n} events, or not in order",
            got.len()
        );
    }
    let mut reader = SseReader::new(slow);
    for (i, w) in want.iter().enumerate() {
        let a = within(Duration::from_secs(10), "an event", reader.next_event())
            .await
            .expect("the stream stays open");
        assert!(
            &a.event.data == w,
            "the slow reader's event {i} is not whole or in order"
        );
    }
    let last = within(
        Duration::from_secs(10),
        "the last event",
        reader.next_event(),
    )
    .await
    .unwrap();
    assert_eq!(last.event.event_type, "last");
}

/// Events written through the socket count as activity for the heartbeat timer, which
/// the connection cannot see: no comments while they flow, comments once they stop, and
/// the comments never split an event (they claim the wire first). On a current-thread
/// runtime, so that `buffered()` shows where a write went (see above).
#[tokio::test]
async fn heartbeats_wait_while_writes_go_straight_to_the_socket() {
    let mut f = start(ServerConfig::default().heartbeat(Some(Duration::from_millis(200)))).await;
    let (conn, head) = open_sse(f.server.local_addr(), "/events").await;
    assert!(direct(&head));
    let tx = next_sender(&mut f).await;
    let mut reader = SseReader::new(conn);
    assert_eq!(reader.next_event().await.unwrap().event.data, "first");
    // Events every 50 ms for ~1 s: each goes straight to the socket.
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tx.send_data(&format!("n{i}")).unwrap());
        assert_eq!(tx.stream().buffered(), 0, "written through");
        let a = within(Duration::from_secs(2), "an event", reader.next_event()).await;
        assert_eq!(a.unwrap().event.data, format!("n{i}"));
    }
    assert!(
        reader.parser.comments.is_empty(),
        "heartbeats on a busy stream: {:?}",
        reader.parser.comments
    );
    // Then silence: heartbeats come (within two intervals of the last event).
    let quiet = std::time::Instant::now();
    while reader.parser.comments.len() < 2 {
        let more = within(
            Duration::from_secs(3),
            "a heartbeat",
            reader.conn.read_chunk(),
        )
        .await;
        let Chunk::Data(d) = more else {
            panic!("stream ended: {more:?}")
        };
        assert!(reader.parser.feed(&d).is_empty(), "only comments");
    }
    assert!(quiet.elapsed() >= Duration::from_millis(200));
    // An event after the heartbeats still arrives whole.
    assert!(tx.send_data("after").unwrap());
    let a = within(Duration::from_secs(2), "an event", reader.next_event()).await;
    assert_eq!(a.unwrap().event.data, "after");
}

#[tokio::test]
async fn an_aborted_stream_cuts_the_connection_without_a_clean_end() {
    let (server, mut senders) = firehose(QueueLimits::default()).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request("GET", "/firehose", &[], b"").await;
    let head = conn.read_head().await;
    assert!(direct(&head));
    let tx = within(Duration::from_secs(2), "the sender", senders.recv())
        .await
        .unwrap();
    tx.write(seq_chunk(1)).unwrap();
    assert_eq!(conn.read_chunk().await, Chunk::Data(seq_chunk(1).to_vec()));
    tx.abort("producer failed");
    assert_eq!(conn.read_chunk().await, Chunk::Eof);
}

#[tokio::test]
async fn the_date_header_follows_the_clock() {
    // The direct path formats `date` once a second per thread: it must still move on.
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    let mut dates = Vec::new();
    for _ in 0..2 {
        let (head, _) = conn.roundtrip("GET", "/bad", &[], b"").await;
        assert!(direct(&head));
        let date = httpdate::parse_http_date(head.get("date").unwrap()).unwrap();
        let off = date
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(2), "date {off:?} away from now");
        dates.push(date);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(
        dates[1] > dates[0],
        "a second later, a later date: {dates:?}"
    );
}

#[tokio::test]
async fn a_request_then_eof_is_answered_and_the_connection_closed() {
    // The head read clears the socket's readiness after a short read (no EAGAIN read): an
    // EOF that came with the request must still be seen once the response is written.
    let f = start(ServerConfig::default()).await;
    let mut stream = TcpStream::connect(f.server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut conn = RawConn::from_stream(stream);
    let head = conn.read_head().await;
    assert_eq!(head.status, 400);
    assert_eq!(conn.read_body(&head).await, b"no such topic");
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    eventually(Duration::from_secs(2), "the connection closed", || {
        f.server.metrics().snapshot().active_connections == 0
    })
    .await;
}

#[tokio::test]
async fn a_keep_alive_request_sent_in_pieces_is_read_in_full() {
    // A short read of a partial head clears readiness too: the rest must wake the task.
    let f = start(ServerConfig::default()).await;
    let mut conn = RawConn::connect(f.server.local_addr()).await;
    for _ in 0..2 {
        conn.send_raw(b"GET /bad HT").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        conn.send_raw(b"TP/1.1\r\nHost: x\r\n").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        conn.send_raw(b"\r\n").await;
        let head = within(Duration::from_secs(2), "the response", conn.read_head()).await;
        assert_eq!(head.status, 400);
        assert!(direct(&head));
        assert_eq!(conn.read_body(&head).await, b"no such topic");
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or with two, is a 400 on either
/// path, and the connection closes; HTTP/1.0 may omit it.
#[tokio::test]
async fn a_request_without_one_host_is_a_400_on_both_paths() {
    let f = start(ServerConfig::default()).await;
    let addr = f.server.local_addr();
    let answer = |head: String| async move {
        let mut conn = RawConn::connect(addr).await;
        conn.send_raw(head.as_bytes()).await;
        assert!(
            conn.closed_within(Duration::from_secs(2)).await,
            "closed after {head:?}"
        );
        String::from_utf8_lossy(conn.pending()).into_owned()
    };
    for path in ["/count", "/hello"] {
        for (version, hosts) in [
            ("1.1", ""),
            ("1.1", "Host: a\r\nHost: b\r\n"),
            ("1.0", "Host: a\r\nHost: b\r\n"),
        ] {
            let res = answer(format!("GET {path} HTTP/{version}\r\n{hosts}\r\n")).await;
            assert!(
                res.starts_with(&format!("HTTP/{version} 400 ")),
                "{path} {hosts:?}: {res}"
            );
            assert!(res.contains("Host header"), "{res}");
        }
        let res = answer(format!("GET {path} HTTP/1.0\r\n\r\n")).await;
        assert!(
            res.starts_with("HTTP/1.0 200 "),
            "HTTP/1.0 without Host: {res}"
        );
    }
}

/// Drops a flag's sender when the handler's future is dropped.
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Clients that give up on a handler that has not answered are noticed at once, on both
/// paths: the handler's future is dropped (a front end aborts its request's signal) and
/// the connection is counted out and closed, not left in CLOSE-WAIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_pending_handler_is_noticed_on_both_paths() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel::<&'static str>();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut app = App::new();
    let never = |name: &'static str, tx: mpsc::UnboundedSender<&'static str>| {
        let started = started.clone();
        move |_req: Request| {
            let tx = tx.clone();
            let started = started.clone();
            async move {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (flag, gone) = tokio::sync::oneshot::channel();
                let _guard = DropSignal(Some(flag));
                tokio::spawn(async move {
                    if gone.await.is_ok() {
                        let _ = tx.send(name);
                    }
                });
                std::future::pending::<&'static str>().await
            }
        }
    };
    long_lived(&mut app, "/direct", never("direct", dropped_tx.clone()));
    app.get("/hyper", never("hyper", dropped_tx.clone()))
        .unwrap();
    app.post("/hyper", never("hyper-post", dropped_tx.clone()))
        .unwrap();
    let server = serve_with(app, ServerConfig::default()).await;
    let addr = server.local_addr();
    for (method, path, name) in [
        ("GET", "/direct", "direct"),
        ("GET", "/hyper", "hyper"),
        ("POST", "/hyper", "hyper-post"),
    ] {
        let mut conns = Vec::new();
        for _ in 0..10 {
            let mut conn = RawConn::connect(addr).await;
            conn.send_request(
                method,
                path,
                &[],
                if method == "POST" { b"body" } else { b"" },
            )
            .await;
            conns.push(conn);
        }
        eventually(Duration::from_secs(2), "ten handlers running", || {
            started.load(std::sync::atomic::Ordering::SeqCst) == 10
        })
        .await;
        started.store(0, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(server.metrics().snapshot().active_connections, 10);
        drop(conns);
        for _ in 0..10 {
            let got = within(
                Duration::from_secs(2),
                "the handler dropped",
                dropped.recv(),
            )
            .await;
            assert_eq!(got, Some(name));
        }
        eventually(
            Duration::from_secs(2),
            "the connections counted out",
            || server.metrics().snapshot().active_connections == 0,
        )
        .await;
    }
}
