use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::noop_waker_ref;
use http_body::Body as _;

use super::*;
use crate::stream::Body;

/// A subscriber as the server would create it: a queue and the body a connection polls.
fn subscriber(limits: QueueLimits) -> (StreamSender, Body) {
    let (resp, tx) = crate::stream::StreamingResponse::channel("text/event-stream", limits);
    (tx, resp.into_response().into_body())
}

fn drain(body: &mut Body) -> String {
    let mut out = Vec::new();
    let mut cx = Context::from_waker(noop_waker_ref());
    while let Poll::Ready(Some(Ok(f))) = std::pin::Pin::new(&mut *body).poll_frame(&mut cx) {
        out.extend_from_slice(&f.into_data().unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// Ids of the events in an SSE text, in order; an id the channel gave is shown by its
/// number alone (without its epoch).
fn ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.rsplit('-').next().unwrap_or(id).to_string())
        .collect()
}

/// The id `ch` gives its `n`th event.
fn id(ch: &Channel, n: u64) -> String {
    format!("{}-{n}", ch.lock().epoch)
}

fn publish_n(ch: &Channel, range: std::ops::Range<u32>) {
    for i in range {
        ch.publish(Event::data_only(format!("e{i}"))).unwrap();
    }
}

#[test]
fn every_subscriber_gets_every_event_in_order() {
    let ch = Channel::new("t", ChannelOptions::default());
    let mut subs: Vec<_> = (0..10)
        .map(|_| subscriber(QueueLimits::default()))
        .collect();
    for (tx, _) in &subs {
        ch.subscribe(tx, None);
    }
    publish_n(&ch, 0..50);
    let want: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    for (_, body) in &mut subs {
        assert_eq!(ids(&drain(body)), want);
    }
    let m = ch.metrics();
    assert_eq!((m.subscribers, m.published, m.delivered), (10, 50, 500));
}

#[test]
fn events_keep_their_own_ids() {
    let ch = Channel::new("t", ChannelOptions::default());
    let own = ch
        .publish(Event::data_only("x").id("abc").unwrap())
        .unwrap();
    assert_eq!(own, "abc");
    assert_eq!(ch.publish(Event::data_only("y")).unwrap(), id(&ch, 1));
}

#[test]
fn resume_replays_exactly_what_was_missed() {
    let ch = Channel::new("t", ChannelOptions::default());
    publish_n(&ch, 0..10);
    // Just before the switch: last seen is the newest → nothing replayed, then live.
    let (tx, mut body) = subscriber(QueueLimits::default());
    let s = ch.subscribe(&tx, Some(&id(&ch, 10)));
    assert_eq!(
        s,
        Subscribed {
            replayed: 0,
            missed: false
        }
    );
    publish_n(&ch, 10..12);
    assert_eq!(ids(&drain(&mut body)), vec!["11", "12"]);
    // Behind by a few: replay 8..=12 then live 13.
    let (tx, mut body) = subscriber(QueueLimits::default());
    assert_eq!(ch.subscribe(&tx, Some(&id(&ch, 7))).replayed, 5);
    publish_n(&ch, 12..13);
    assert_eq!(
        ids(&drain(&mut body)),
        vec!["8", "9", "10", "11", "12", "13"]
    );
    assert_eq!(ch.metrics().replayed, 5);
}

#[test]
fn an_id_older_than_history_gets_a_missed_event_then_all_history() {
    let ch = Channel::new(
        "t",
        ChannelOptions {
            history: 3,
            ..Default::default()
        },
    );
    publish_n(&ch, 0..10);
    let (tx, mut body) = subscriber(QueueLimits::default());
    let s = ch.subscribe(&tx, Some(&id(&ch, 2)));
    assert_eq!(
        s,
        Subscribed {
            replayed: 3,
            missed: true
        }
    );
    let text = drain(&mut body);
    assert!(text.starts_with("event: missed\ndata: {"), "{text}");
    let first = format!(r#""firstAvailableId":"{}""#, id(&ch, 8));
    assert!(text.contains(&first), "{text}");
    let last = format!(r#""lastEventId":"{}""#, id(&ch, 2));
    assert!(text.contains(&last), "{text}");
    assert_eq!(ids(&text), vec!["8", "9", "10"]);
}

#[test]
fn an_unknown_id_is_treated_as_missed() {
    let ch = Channel::new("t", ChannelOptions::default());
    publish_n(&ch, 0..2);
    let (tx, mut body) = subscriber(QueueLimits::default());
    assert!(ch.subscribe(&tx, Some("from-another-server")).missed);
    assert_eq!(ids(&drain(&mut body)), vec!["1", "2"]);
}

#[test]
fn an_id_from_another_life_of_the_channel_is_missed_not_matched() {
    let before = Channel::new("t", ChannelOptions::default());
    publish_n(&before, 0..5);
    let old = id(&before, 2);
    // The same channel after a restart: it published as many events again.
    let ch = Channel::new("t", ChannelOptions::default());
    publish_n(&ch, 0..5);
    assert_ne!(old, id(&ch, 2));
    let (tx, mut body) = subscriber(QueueLimits::default());
    assert!(ch.subscribe(&tx, Some(&old)).missed);
    let text = drain(&mut body);
    assert!(text.starts_with("event: missed\n"), "{text}");
    assert_eq!(ids(&text), ["1", "2", "3", "4", "5"]);
    // A bare number (an id of the format before epochs) is missed too.
    let (tx, _body) = subscriber(QueueLimits::default());
    assert!(ch.subscribe(&tx, Some("2")).missed);
}

#[test]
fn epochs_differ_between_channels_made_in_the_same_millisecond() {
    let epochs: std::collections::HashSet<String> = (0..50)
        .map(|_| {
            Channel::new("t", ChannelOptions::default())
                .lock()
                .epoch
                .to_string()
        })
        .collect();
    assert!(epochs.len() >= 49, "{epochs:?}");
}

#[test]
fn slow_subscriber_is_closed_and_the_others_keep_everything() {
    let ch = Channel::new("t", ChannelOptions::default());
    let small = QueueLimits {
        high_water_mark: 64,
        max_buffered: 1 << 20,
    };
    let (slow_tx, mut slow_body) = subscriber(small);
    let (fast_tx, mut fast_body) = subscriber(QueueLimits::default());
    ch.subscribe(&slow_tx, None);
    ch.subscribe(&fast_tx, None);
    let mut fast_ids = Vec::new();
    for i in 0..100 {
        ch.publish(Event::data_only(format!("event number {i}")))
            .unwrap();
        fast_ids.extend(ids(&drain(&mut fast_body)));
    }
    assert_eq!(fast_ids.len(), 100);
    assert!(slow_tx.is_closed());
    let m = ch.metrics();
    assert_eq!((m.subscribers, m.closed_slow), (1, 1));
    // The slow client's connection is cut (an error frame), its queue released.
    assert_eq!(slow_tx.buffered(), 0);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(matches!(
        std::pin::Pin::new(&mut slow_body).poll_frame(&mut cx),
        Poll::Ready(Some(Err(_)))
    ));
}

#[test]
fn drop_oldest_counts_gaps_and_bounds_the_queue() {
    let ch = Channel::new(
        "t",
        ChannelOptions {
            slow_client: SlowClient::DropOldest,
            ..Default::default()
        },
    );
    let small = QueueLimits {
        high_water_mark: 100,
        max_buffered: 1 << 20,
    };
    let (tx, mut body) = subscriber(small);
    ch.subscribe(&tx, None);
    publish_n(&ch, 0..50);
    assert!(tx.buffered() < 100 + 30);
    assert!(!tx.is_closed());
    let m = ch.metrics();
    assert!(m.dropped > 0);
    let got = ids(&drain(&mut body));
    assert_eq!(got.last().map(String::as_str), Some("50"), "newest kept");
    assert_eq!(
        got.len() as u64 + m.dropped,
        50,
        "every event either delivered or counted"
    );
}

#[test]
fn subscribers_leave_when_their_connection_closes() {
    let ch = Channel::new("t", ChannelOptions::default());
    let subs: Vec<_> = (0..100)
        .map(|_| subscriber(QueueLimits::default()))
        .collect();
    for (tx, _) in &subs {
        ch.subscribe(tx, None);
    }
    assert_eq!(ch.subscribers(), 100);
    for (i, (_, body)) in subs.into_iter().enumerate() {
        drop(body);
        assert_eq!(ch.subscribers(), 99 - i);
    }
    // A stream already closed when it subscribes is not kept.
    let (tx, body) = subscriber(QueueLimits::default());
    drop(body);
    ch.subscribe(&tx, None);
    assert_eq!(ch.subscribers(), 0);
}

#[test]
fn close_ends_every_stream_and_rejects_publishes() {
    let ch = Channel::new("t", ChannelOptions::default());
    let (tx, mut body) = subscriber(QueueLimits::default());
    ch.subscribe(&tx, None);
    ch.publish(Event::data_only("last")).unwrap();
    ch.close();
    assert!(ch
        .publish(Event::data_only("late"))
        .unwrap_err()
        .is_closed());
    assert_eq!(ids(&drain(&mut body)), vec!["1"]);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(matches!(
        std::pin::Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(None)
    ));
    let (tx2, _b2) = subscriber(QueueLimits::default());
    ch.subscribe(&tx2, None);
    assert!(tx2.is_closed());
}

#[test]
fn concurrent_publishers_give_one_order_to_everyone() {
    let ch = Channel::new(
        "t",
        ChannelOptions {
            history: 10_000,
            ..Default::default()
        },
    );
    let big = QueueLimits {
        high_water_mark: 1 << 24,
        max_buffered: 1 << 25,
    };
    let mut subs: Vec<_> = (0..4).map(|_| subscriber(big)).collect();
    for (tx, _) in &subs {
        ch.subscribe(tx, None);
    }
    std::thread::scope(|s| {
        for t in 0..4 {
            let ch = ch.clone();
            s.spawn(move || {
                for i in 0..500 {
                    ch.publish(Event::data_only(format!("t{t}-{i}"))).unwrap();
                }
            });
        }
    });
    let first = drain(&mut subs[0].1);
    assert_eq!(ids(&first).len(), 2000);
    let want: Vec<String> = (1..=2000).map(|i| i.to_string()).collect();
    assert_eq!(ids(&first), want, "ids are assigned in publish order");
    for (_, body) in &mut subs[1..] {
        assert_eq!(
            drain(body),
            first,
            "every subscriber sees the same sequence"
        );
    }
}

#[test]
fn replay_is_not_cut_by_the_hard_buffer_limit() {
    let ch = Channel::new(
        "t",
        ChannelOptions {
            history: 1000,
            ..Default::default()
        },
    );
    for _ in 0..100 {
        ch.publish(Event::data_only("x".repeat(1000))).unwrap();
    }
    let small = QueueLimits {
        high_water_mark: 1000,
        max_buffered: 4000,
    };
    let (tx, mut body) = subscriber(small);
    assert_eq!(ch.subscribe(&tx, Some(&id(&ch, 1))).replayed, 99);
    assert_eq!(ids(&drain(&mut body)).len(), 99);
    let _ = Bytes::new();
}

#[test]
fn comments_reach_subscribers_but_are_not_counted_as_events() {
    let ch = Channel::new("t", ChannelOptions::default());
    let (tx, mut body) = subscriber(QueueLimits::default());
    ch.subscribe(&tx, None);
    ch.broadcast_raw(crate::stream::sse::comment_frame("keep-alive"))
        .unwrap();
    ch.publish(Event::data_only("x")).unwrap();
    let want = format!(": keep-alive\n\nid: {}\ndata: x\n\n", id(&ch, 1));
    assert_eq!(drain(&mut body), want);
    let m = ch.metrics();
    assert_eq!((m.published, m.delivered), (1, 1));
}

// With a runtime: the fan-out task. These run on a current-thread runtime, so the task
// runs only when the test yields, and what a publish did by itself is visible.

/// Yields until the channel's fan-out task has nothing left to do.
async fn settle(ch: &Channel) {
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
        if !ch.lock().fan.running {
            return;
        }
    }
    panic!("the fan-out task never finished");
}

#[tokio::test]
async fn a_subscriber_from_a_runtime_gets_events_from_the_fan_out_task_in_order() {
    let ch = Channel::new("t", ChannelOptions::default());
    let mut subs: Vec<_> = (0..3).map(|_| subscriber(QueueLimits::default())).collect();
    for (tx, _) in &subs {
        ch.subscribe(tx, None);
    }
    publish_n(&ch, 0..20);
    // The publisher only logged them.
    assert_eq!(drain(&mut subs[0].1), "");
    assert_eq!(ch.metrics().delivered, 0);
    settle(&ch).await;
    let want: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    for (_, body) in &mut subs {
        assert_eq!(ids(&drain(body)), want);
    }
    let m = ch.metrics();
    assert_eq!((m.published, m.delivered), (20, 60));
    assert!(
        ch.lock().fan.log.is_empty(),
        "the log is emptied once swept"
    );
}

#[tokio::test]
async fn subscribers_joining_before_the_sweep_get_neither_gaps_nor_duplicates() {
    let ch = Channel::new("t", ChannelOptions::default());
    let (a, mut body_a) = subscriber(QueueLimits::default());
    ch.subscribe(&a, None);
    // 1, 2: logged, not yet handed out.
    publish_n(&ch, 0..2);
    // Joins live: only what is published from now on.
    let (b, mut body_b) = subscriber(QueueLimits::default());
    ch.subscribe(&b, None);
    // Resumes after 1: history replays 2, and the sweep must not give it 2 again.
    let (c, mut body_c) = subscriber(QueueLimits::default());
    assert_eq!(ch.subscribe(&c, Some(&id(&ch, 1))).replayed, 1);
    publish_n(&ch, 2..3); // 3
    settle(&ch).await;
    assert_eq!(ids(&drain(&mut body_a)), ["1", "2", "3"]);
    assert_eq!(ids(&drain(&mut body_b)), ["3"]);
    assert_eq!(ids(&drain(&mut body_c)), ["2", "3"]);
}

#[tokio::test]
async fn a_sweep_over_many_subscribers_takes_in_what_is_published_meanwhile() {
    let ch = Channel::new("t", ChannelOptions::default());
    let n = 3 * super::SWEEP_STEP + 7;
    let mut subs: Vec<_> = (0..n).map(|_| subscriber(QueueLimits::default())).collect();
    for (tx, _) in &subs {
        ch.subscribe(tx, None);
    }
    let mut late = Vec::new();
    for i in 0..6u32 {
        publish_n(&ch, i..i + 1);
        // One step of the sweep at most, then more published behind it, and a subscriber
        // that joins somewhere in the middle.
        tokio::task::yield_now().await;
        let (tx, body) = subscriber(QueueLimits::default());
        ch.subscribe(&tx, None);
        late.push((i + 1, tx, body));
    }
    settle(&ch).await;
    let want: Vec<String> = (1..=6).map(|i| i.to_string()).collect();
    for (_, body) in &mut subs {
        assert_eq!(ids(&drain(body)), want);
    }
    for (joined_after, _, body) in &mut late {
        let want: Vec<String> = (*joined_after + 1..=6).map(|i| i.to_string()).collect();
        assert_eq!(ids(&drain(body)), want, "joined after {joined_after}");
    }
    assert_eq!(ch.metrics().delivered, (n * 6 + 5 + 4 + 3 + 2 + 1) as u64);
}

#[tokio::test]
async fn a_publisher_that_outruns_the_task_hands_out_the_log_itself() {
    let ch = Channel::new("t", ChannelOptions::default());
    let big = QueueLimits {
        high_water_mark: 1 << 24,
        max_buffered: 1 << 25,
    };
    let (tx, mut body) = subscriber(big);
    ch.subscribe(&tx, None);
    let data = "x".repeat(1000);
    let count = 2 * super::PENDING_LIMIT / 1000;
    for _ in 0..count {
        ch.publish(Event::data_only(data.clone())).unwrap();
    }
    // No yield yet: the publisher queued them once the log passed the limit.
    assert!(ch.metrics().delivered >= (super::PENDING_LIMIT / 1100) as u64);
    assert!(ch.lock().fan.log_bytes <= super::PENDING_LIMIT);
    settle(&ch).await;
    let want: Vec<String> = (1..=count).map(|i| i.to_string()).collect();
    assert_eq!(ids(&drain(&mut body)), want);
    assert_eq!(ch.metrics().delivered, count as u64);
}

#[tokio::test]
async fn close_first_hands_out_what_was_published() {
    let ch = Channel::new("t", ChannelOptions::default());
    let (tx, mut body) = subscriber(QueueLimits::default());
    ch.subscribe(&tx, None);
    publish_n(&ch, 0..3);
    ch.close();
    assert_eq!(ids(&drain(&mut body)), ["1", "2", "3"]);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(matches!(
        std::pin::Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(None)
    ));
    settle(&ch).await;
}

#[test]
fn a_fan_out_task_dropped_with_its_runtime_still_delivers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ch = Channel::new("t", ChannelOptions::default());
    let (tx, mut body) = subscriber(QueueLimits::default());
    rt.block_on(async { ch.subscribe(&tx, None) });
    publish_n(&ch, 0..2); // spawned onto a runtime that is not running
    assert_eq!(drain(&mut body), "");
    drop(rt);
    assert_eq!(ids(&drain(&mut body)), ["1", "2"]);
    // Later publishes find no runtime to run on and are handed out at once.
    publish_n(&ch, 2..3);
    assert_eq!(ids(&drain(&mut body)), ["3"]);
    assert!(!ch.lock().fan.running);
}

#[test]
fn a_stream_on_two_channels_resumes_each_after_its_own_position() {
    let (a, b) = (
        Channel::new("a", ChannelOptions::default()),
        Channel::new("b", ChannelOptions::default()),
    );
    b.publish(Event::data_only("b0")).unwrap();
    let (tx, mut body) = subscriber(QueueLimits::default());
    let p = Positions::new(None);
    a.subscribe_at(&tx, &p);
    b.subscribe_at(&tx, &p);
    a.publish(Event::data_only("a1")).unwrap();
    b.publish(Event::data_only("b1")).unwrap();
    a.publish(Event::data_only("a2")).unwrap();
    let text = drain(&mut body);
    let data: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["a1", "b1", "a2"]);
    // The last id the client holds names both positions.
    let last = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap();
    assert!(last.starts_with('@'), "{text}");
    assert_eq!(p.last_event_id(), last);
    // Away: one more on each, then the client comes back with that id.
    a.publish(Event::data_only("a3")).unwrap();
    b.publish(Event::data_only("b2")).unwrap();
    let (tx2, mut body2) = subscriber(QueueLimits::default());
    let p2 = Positions::new(Some(last));
    assert_eq!(a.subscribe_at(&tx2, &p2).replayed, 1);
    assert_eq!(b.subscribe_at(&tx2, &p2).replayed, 1);
    let text = drain(&mut body2);
    let data: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["a3", "b2"], "{text}");
}

#[test]
fn a_stream_on_two_channels_ending_during_a_publish_never_holds_an_event_without_its_position() {
    // The handler ends the stream while a channel hands it an event: what the client got
    // ends with the id frame naming both positions, whenever the end lands.
    let (a, b) = (
        Channel::new("a", ChannelOptions::default()),
        Channel::new("b", ChannelOptions::default()),
    );
    b.publish(Event::data_only("b0")).unwrap();
    let started = std::time::Instant::now();
    let mut given = 0;
    for round in 0..3000 {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
        let (tx, mut body) = subscriber(QueueLimits::default());
        let p = Positions::new(None);
        a.subscribe_at(&tx, &p);
        b.subscribe_at(&tx, &p);
        let go = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                // Spin a little, differently each round, to move the end across the push.
                for _ in 0..(round % 64) {
                    std::hint::spin_loop();
                }
                tx.end();
            });
            go.wait();
            a.publish(Event::data_only("a")).unwrap();
        });
        let text = drain(&mut body);
        let last = text.lines().rev().find_map(|l| l.strip_prefix("id: "));
        if text.contains("data: a\n") {
            given += 1;
            assert!(last.is_some_and(|id| id.starts_with('@')), "{text}");
            assert_eq!(p.last_event_id(), last.unwrap(), "{text}");
        }
    }
    assert!(given > 0, "no round gave the event before the end");
}
