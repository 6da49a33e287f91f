use super::*;
use crate::wire::Chunk;
use bytes::Bytes;
use futures_util::task::noop_waker_ref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

fn poll(rx: &mut QueueReceiver) -> Poll<Option<Result<Bytes, String>>> {
    rx.poll_chunk(&mut Context::from_waker(noop_waker_ref()))
        .map(|c| {
            c.map(|r| {
                r.map(|chunk| match chunk {
                    Chunk::Data(bytes) => bytes,
                    Chunk::Framed(_) => panic!("no sink, nothing framed"),
                })
            })
        })
}

#[test]
fn write_reports_the_high_water_mark() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 10,
        max_buffered: 100,
    });
    assert!(tx.write(Bytes::from_static(b"12345")).unwrap());
    assert!(!tx.write(Bytes::from_static(b"67890")).unwrap());
    assert_eq!(tx.buffered(), 10);
    assert!(tx.try_send(Bytes::from_static(b"x")).unwrap_err().is_full());
    // Both chunks come out coalesced into one frame.
    assert_eq!(
        poll(&mut rx),
        Poll::Ready(Some(Ok(Bytes::from_static(b"1234567890"))))
    );
    assert_eq!(tx.buffered(), 0);
    assert!(poll(&mut rx).is_pending());
}

#[test]
fn on_ready_answers_at_once_or_runs_once_when_the_queue_drains() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 4,
        max_buffered: 100,
    });
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = |runs: &Arc<std::sync::atomic::AtomicUsize>| {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
        }
    };
    assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Ready);
    tx.write(Bytes::from_static(b"aa")).unwrap();
    assert!(!tx.write(Bytes::from_static(b"bbbb")).unwrap());
    assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
    // A second request replaces the first: one notice per wait.
    assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(poll(&mut rx).is_ready());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Drained again later: nothing armed, nothing runs.
    tx.write(Bytes::from_static(b"cccc")).unwrap();
    assert!(poll(&mut rx).is_ready());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Armed, then the client leaves: the callback is dropped, not run.
    tx.write(Bytes::from_static(b"dddd")).unwrap();
    assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Armed);
    drop(rx);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(tx.on_ready(counter(&runs)), ReadyState::Closed);
}

#[test]
fn hard_limit_aborts_instead_of_growing() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 4,
        max_buffered: 8,
    });
    tx.write(Bytes::from_static(b"aaaa")).unwrap();
    tx.write(Bytes::from_static(b"bbbb")).unwrap();
    let err = tx.write(Bytes::from_static(b"c")).unwrap_err();
    assert!(err.is_full());
    assert!(tx.is_closed());
    assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
}

#[test]
fn write_slices_without_a_sink_queues_one_copy_and_keeps_the_limits() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 6,
        max_buffered: 10,
    });
    assert!(tx.write_slices(&[b"ab", b"", b"c"]).unwrap());
    assert!(
        tx.write_slices(&[]).unwrap(),
        "nothing written, still below"
    );
    assert!(!tx.write_slices(&[b"de", b"f"]).unwrap(), "at the mark");
    assert_eq!(tx.buffered(), 6);
    assert_eq!(
        poll(&mut rx),
        Poll::Ready(Some(Ok(Bytes::from_static(b"abcdef"))))
    );
    tx.write_slices(&[b"0123456789"]).unwrap();
    // Past the hard limit with something queued: the stream is aborted.
    assert!(tx.write_slices(&[b"x"]).unwrap_err().is_full());
    assert!(tx.write_slices(&[b"y"]).unwrap_err().is_closed());
    assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
}

#[test]
fn end_delivers_queued_then_finishes() {
    let (tx, mut rx) = queue(QueueLimits::default());
    tx.write(Bytes::from_static(b"last")).unwrap();
    tx.end();
    assert!(tx
        .write(Bytes::from_static(b"late"))
        .unwrap_err()
        .is_closed());
    assert_eq!(
        poll(&mut rx),
        Poll::Ready(Some(Ok(Bytes::from_static(b"last"))))
    );
    assert_eq!(poll(&mut rx), Poll::Ready(None));
}

#[test]
fn dropping_the_body_runs_close_callbacks_and_closes() {
    let (tx, rx) = queue(QueueLimits::default());
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tx.on_close(move || f.store(true, Ordering::SeqCst));
    drop(rx);
    assert!(flag.load(Ordering::SeqCst));
    assert!(tx.is_disconnected());
    assert!(tx.write(Bytes::from_static(b"x")).unwrap_err().is_closed());
    // Registered after the fact: runs at once.
    let f2 = flag.clone();
    f2.store(false, Ordering::SeqCst);
    tx.on_close(move || f2.store(true, Ordering::SeqCst));
    assert!(flag.load(Ordering::SeqCst));
}

#[test]
fn drop_oldest_policy_keeps_the_queue_bounded() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 6,
        max_buffered: 100,
    });
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"aaa"), true, None),
        Pushed::Queued
    );
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"bbb"), true, None),
        Pushed::Queued
    );
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"ccc"), true, None),
        Pushed::DroppedOldest(1)
    );
    assert_eq!(tx.buffered(), 6);
    assert_eq!(
        poll(&mut rx),
        Poll::Ready(Some(Ok(Bytes::from_static(b"bbbccc"))))
    );
}

/// A coded stream: the header first, the pieces, a heartbeat in the coding, and at the end
/// the trailer of what it carried, which a strict decoder accepts.
#[test]
fn a_coded_stream_ends_with_the_trailer_of_what_it_carried() {
    use crate::compress::{Coding, CrcPart, Encoding};
    use std::io::Read as _;
    let coding = Coding::new(Encoding::Gzip, None).unwrap();
    let (tx, mut rx) = queue(QueueLimits::default());
    tx.set_coding(coding);
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    for e in [&b"data: a\n\n"[..], b"data: bb\n\n"] {
        let part = CrcPart::of(e);
        let piece = coding.compress(e).unwrap();
        assert_eq!(
            tx.push_with_policy(piece, false, Some(&part)),
            Pushed::Queued
        );
        plain.extend_from_slice(e);
    }
    let Poll::Ready(Some(Ok(b))) = poll(&mut rx) else {
        panic!()
    };
    wire.extend_from_slice(&b);
    let Heartbeat::Send(beat) = rx.claim_heartbeat() else {
        panic!("idle")
    };
    wire.extend_from_slice(&beat);
    plain.extend_from_slice(crate::stream::HEARTBEAT);
    tx.end();
    let Poll::Ready(Some(Ok(end))) = poll(&mut rx) else {
        panic!("the trailer")
    };
    wire.extend_from_slice(&end);
    assert_eq!(poll(&mut rx), Poll::Ready(None));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&wire[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);
}

/// Pieces dropped under the drop-oldest policy: the trailer would not match the plaintext
/// delivered, so the stream is cut at its end instead.
#[test]
fn a_coded_stream_that_lost_pieces_is_cut_at_its_end() {
    use crate::compress::{Coding, CrcPart, Encoding};
    let coding = Coding::new(Encoding::Gzip, None).unwrap();
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 40,
        max_buffered: 1000,
    });
    tx.set_coding(coding);
    let e = b"data: 0123456789012345678901234567890123456789\n\n";
    let part = CrcPart::of(e);
    let mut dropped = 0;
    for _ in 0..4 {
        if let Pushed::DroppedOldest(n) =
            tx.push_with_policy(coding.compress(e).unwrap(), true, Some(&part))
        {
            dropped += n;
        }
    }
    assert!(dropped > 0);
    tx.end();
    let Poll::Ready(Some(Ok(kept))) = poll(&mut rx) else {
        panic!()
    };
    assert_eq!(
        kept[..10],
        *coding.header().unwrap(),
        "the header is never dropped"
    );
    assert!(matches!(poll(&mut rx), Poll::Ready(Some(Err(_)))));
}

#[test]
fn close_policy_ends_a_full_subscriber() {
    let (tx, _rx) = queue(QueueLimits {
        high_water_mark: 3,
        max_buffered: 100,
    });
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"aaa"), false, None),
        Pushed::Queued
    );
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"b"), false, None),
        Pushed::ClosedFull
    );
    assert_eq!(
        tx.push_with_policy(Bytes::from_static(b"b"), false, None),
        Pushed::Closed
    );
}

#[tokio::test]
async fn send_waits_for_room_and_ready_sees_close() {
    let (tx, mut rx) = queue(QueueLimits {
        high_water_mark: 4,
        max_buffered: 100,
    });
    tx.write(Bytes::from_static(b"full")).unwrap();
    let tx2 = tx.clone();
    let waiter = tokio::spawn(async move { tx2.send(Bytes::from_static(b"next")).await });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    let _ = poll(&mut rx);
    waiter.await.unwrap().unwrap();
    assert_eq!(tx.buffered(), 4);
    let tx3 = tx.clone();
    let ready = tokio::spawn(async move { tx3.ready().await });
    tokio::task::yield_now().await;
    drop(rx);
    assert!(!ready.await.unwrap());
    tx.closed().await;
}

mod size {
    use super::*;

    /// One `Shared` per stream (an idle SSE subscriber's largest allocation after its task
    /// and socket): rarely used parts are allocated on first use.
    #[test]
    fn a_queue_is_small() {
        let size = std::mem::size_of::<Shared>();
        println!(
            "queue Shared: {size} bytes (State: {})",
            std::mem::size_of::<State>()
        );
        // 160 bytes with Rust 1.95 (216 with the rare parts inline), 16 of them the sink
        // (its handle and its descriptor, see `sys::Socket`); the Arc adds 16. The 176
        // bytes take a 192-byte bin in mimalloc (the addon's allocator) and a 192-byte
        // chunk in glibc.
        assert!(size <= 160, "the queue's shared state is {size} bytes");
        let (tx, rx) = queue(QueueLimits::default());
        tx.on_close(|| {});
        assert!(tx.lock().rare.is_none(), "one close callback needs no Rare");
        drop(rx);
    }
}
