//! A client that stops reading must not make the server buffer without bound: the
//! stream's queue stays at its high-water mark and a producer using `send().await` waits.
//! The kernel's socket buffers (and hyper's small write buffer) absorb some bytes first,
//! so the producer gets some way ahead before it is held back; that part is bounded too.
//! Each test runs on both writers of the wire (`hyper::…`, `direct::…`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rat_engine::{App, QueueLimits, StreamSender, StreamingResponse};
use support::{seq_chunk, serve, spawn_seq_producer, within, Chunk, RawConn, Wire};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const CHUNK: usize = support::SEQ_CHUNK;
const HIGH_WATER: usize = 16 * CHUNK;
/// Upper bound on what the producer may push before it must have been held back:
/// the queue, hyper's write buffer and the loopback socket buffers are far below this.
const MAX_CHUNKS_BEFORE_BLOCK: usize = 32 * 1024;

fn firehose_app(wire: Wire, limits: QueueLimits) -> (App, mpsc::UnboundedReceiver<StreamSender>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut app = App::new();
    wire.get(&mut app, "/firehose", move |_req| {
        let tx = tx.clone();
        async move {
            let (res, sender) = StreamingResponse::channel("application/octet-stream", limits);
            tx.send(sender).unwrap();
            res
        }
    })
    .unwrap();
    (app, rx)
}

/// Connects with a small receive buffer and reads only the response head.
async fn paused_reader(wire: Wire, addr: SocketAddr) -> RawConn {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(Duration::from_secs(5), "connect", socket.connect(addr))
        .await
        .unwrap();
    let mut conn = RawConn::from_stream(stream);
    conn.send_request("GET", "/firehose", &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("application/octet-stream"));
    wire.assert_wrote(&head);
    conn
}

async fn a_paused_reader_holds_the_queue_at_the_high_water_mark_and_paces_send(wire: Wire) {
    let limits = QueueLimits {
        high_water_mark: HIGH_WATER,
        max_buffered: 64 * HIGH_WATER,
    };
    let (app, mut senders) = firehose_app(wire, limits);
    let server = serve(app).await;
    let mut conn = paused_reader(wire, server.local_addr()).await;
    let tx = within(Duration::from_secs(2), "the stream sender", senders.recv())
        .await
        .unwrap();

    // Push as fast as `send` allows. Once nothing drains the queue, a send must wait.
    let started = Instant::now();
    let mut seq = 0u64;
    let mut max_buffered = 0;
    let blocked_at = loop {
        assert!(
            (seq as usize) < MAX_CHUNKS_BEFORE_BLOCK && started.elapsed() < Duration::from_secs(10),
            "the producer was never held back: {seq} chunks sent in {:?}",
            started.elapsed()
        );
        match timeout(Duration::from_millis(300), tx.send(seq_chunk(seq))).await {
            Ok(Ok(())) => {
                seq += 1;
                max_buffered = max_buffered.max(tx.buffered());
            }
            Ok(Err(e)) => panic!("the stream closed under a paused reader: {e:?}"),
            Err(_) => break seq,
        }
    };
    assert!(
        max_buffered <= HIGH_WATER,
        "queue reached {max_buffered} bytes, mark is {HIGH_WATER}"
    );
    assert!(
        tx.buffered() >= HIGH_WATER - CHUNK,
        "a held-back producer faces a full queue: {}",
        tx.buffered()
    );

    // Still held back a little later, and the queue has not grown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tx.buffered() <= HIGH_WATER);
    assert!(
        timeout(Duration::from_millis(200), tx.send(seq_chunk(seq)))
            .await
            .is_err(),
        "send must still wait"
    );
    assert!(!tx.is_closed(), "a slow reader is not a disconnect");

    // The reader resumes: the producer finishes, and every byte arrives in order.
    const TAIL: u64 = 64;
    let producer = spawn_seq_producer(tx.clone(), blocked_at..blocked_at + TAIL);
    let body = within(
        Duration::from_secs(10),
        "the whole body",
        conn.read_chunked_body(),
    )
    .await;
    within(Duration::from_secs(2), "the producer", producer)
        .await
        .unwrap();
    let total = blocked_at + TAIL;
    assert_eq!(body.len(), total as usize * CHUNK);
    for (i, c) in body.chunks(CHUNK).enumerate() {
        assert_eq!(
            c,
            &seq_chunk(i as u64)[..],
            "chunk {i} out of order or corrupted"
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
}

async fn a_producer_ignoring_backpressure_is_cut_off_at_the_hard_limit(wire: Wire) {
    let limits = QueueLimits {
        high_water_mark: 4 * CHUNK,
        max_buffered: 64 * CHUNK,
    };
    let (app, mut senders) = firehose_app(wire, limits);
    let server = serve(app).await;
    let mut conn = paused_reader(wire, server.local_addr()).await;
    let tx = within(Duration::from_secs(2), "the stream sender", senders.recv())
        .await
        .unwrap();

    // `write` never waits; it reports "above the mark" and, past the hard limit, aborts.
    let started = Instant::now();
    let mut saw_above_mark = false;
    let mut max_buffered = 0;
    let err = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hard limit never triggered"
        );
        match tx.write(seq_chunk(0)) {
            Ok(below) => {
                saw_above_mark |= !below;
                max_buffered = max_buffered.max(tx.buffered());
            }
            Err(e) => break e,
        }
        tokio::task::yield_now().await;
    };
    assert!(err.is_full(), "{err:?}");
    assert!(
        saw_above_mark,
        "write reported the high-water mark before the hard limit"
    );
    assert!(max_buffered <= 64 * CHUNK, "queue grew to {max_buffered}");
    assert!(tx.is_closed());

    // The client sees an incomplete body: the connection is cut, no clean end.
    let end = within(Duration::from_secs(10), "the cut", async {
        loop {
            match conn.read_chunk().await {
                Chunk::Data(_) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(end, Chunk::Eof, "an aborted stream must not look complete");
    server.shutdown(Duration::from_secs(1)).await;
}

support::on_both_wires! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_paused_reader_holds_the_queue_at_the_high_water_mark_and_paces_send,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_producer_ignoring_backpressure_is_cut_off_at_the_hard_limit,
}
