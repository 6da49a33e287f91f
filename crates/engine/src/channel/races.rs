//! Publishes, joins, leaves and `close` racing the fan-out task, seeded and randomized.
//!
//! Each seed runs a channel on a two-worker runtime (its fan-out task sweeps there) with
//! publisher threads sending bursts larger than the subscribers' high-water mark, a thread
//! that makes subscribers join (live, resuming from a recent id, from a stale one) and
//! leave mid-stream, readers that keep up or pause (some reporting their stalls as the
//! direct path does, some not, as hyper's connections), and `close` from yet another
//! thread, during the publishes or after them. What each reader got is then checked:
//!
//! * ids strictly one after the other from its first to its last event (no gap, no
//!   duplicate, no reordering); with `DropOldest`, strictly increasing;
//! * a resumer's first event is the one after the id it gave (or `missed` then history);
//! * a reader still subscribed at `close` got every event published, and a clean end;
//! * a reader cut for falling behind got a gap-free prefix and an error, not a clean end.
//!
//! Some readers are compressed subscribers (gzip or zstd, the channel's shared pieces): a
//! clean end must decode whole (the gzip trailer's CRC and length checked), any other end
//! as far as it went.
//!
//! `RAT_RACE_SEEDS` sets the number of seeds (the soak run uses thousands).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;

use super::*;
use crate::stream::{Body, StreamingResponse};

/// xorshift64*: a seeded stream of choices per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a subscriber joined.
#[derive(Debug, Clone)]
enum Join {
    Live,
    /// With this number as its last event id (in history or not).
    After(u64),
    /// With an id of another life of the channel.
    Stale,
}

/// What a reader saw.
#[derive(Debug)]
struct Seen {
    join: Join,
    /// `missed` events.
    missed: usize,
    /// Event numbers in arrival order.
    ids: Vec<u64>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The stream ended cleanly (the channel closed).
    Clean,
    /// The stream was cut (the subscriber fell behind).
    Cut,
    /// The reader left first.
    Left,
}

/// Parses the SSE text a reader collected.
fn parse(text: &str) -> (usize, Vec<u64>) {
    let (mut missed, mut ids) = (0, Vec::new());
    for frame in text.split("\n\n") {
        if frame.starts_with("event: missed") {
            missed += 1;
        } else if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
            let n = id.rsplit('-').next().and_then(|n| n.parse().ok());
            ids.push(n.expect("a channel id"));
        }
    }
    (missed, ids)
}

/// Reads `body` until it ends or the reader decides to leave, pausing now and then.
async fn read(mut body: Body, mut rng: Rng, slow: bool, stop: Arc<AtomicBool>) -> (Vec<u8>, End) {
    let leave_after = if rng.chance(25) {
        Some(rng.below(40))
    } else {
        None
    };
    let mut text = Vec::new();
    let mut frames = 0u64;
    loop {
        if leave_after.is_some_and(|n| frames >= n) {
            return (text, End::Left);
        }
        if slow && rng.chance(20) {
            // A socket that refused bytes: the direct path reports it before it waits.
            body.set_stalled();
            tokio::time::sleep(Duration::from_millis(rng.below(8))).await;
        } else if rng.chance(30) {
            tokio::task::yield_now().await;
        }
        let next = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
        let end = match next {
            Ok(Some(Ok(frame))) => {
                text.extend_from_slice(&frame.into_data().unwrap_or_default());
                frames += 1;
                continue;
            }
            Ok(None) => End::Clean,
            Ok(Some(Err(_))) => End::Cut,
            Err(_) if stop.load(SeqCst) => panic!("a stream neither ended nor was cut"),
            Err(_) => continue,
        };
        return (text, end);
    }
}

/// The text of what a reader got: decoded if its stream was compressed, whole for a clean
/// end (the decoder checks the coding's end), else as far as it decodes.
fn decode(bytes: Vec<u8>, coding: Option<Coding>, end: &End) -> String {
    use crate::compress::Encoding;
    use std::io::Read as _;
    let Some(coding) = coding else {
        return String::from_utf8(bytes).unwrap();
    };
    let mut reader: Box<dyn std::io::Read + '_> = match coding.encoding {
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(&bytes[..])),
        _ => Box::new(zstd::stream::read::Decoder::new(&bytes[..]).unwrap()),
    };
    let mut out = Vec::new();
    if *end == End::Clean {
        if let Err(e) = reader.read_to_end(&mut out) {
            panic!(
                "a clean end decodes whole: {e} ({coding:?}, {} bytes: {:?}, decoded {:?})",
                bytes.len(),
                &bytes[..bytes.len().min(64)],
                String::from_utf8_lossy(&out[..out.len().min(200)])
            );
        }
    } else {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8(out).unwrap()
}

fn check(seen: &Seen, last_published: u64, drop_oldest: bool, gzip: bool) {
    let ids = &seen.ids;
    for pair in ids.windows(2) {
        if drop_oldest {
            assert!(pair[1] > pair[0], "out of order or duplicated: {seen:?}");
        } else {
            assert_eq!(pair[1], pair[0] + 1, "gap or duplicate: {seen:?}");
        }
    }
    // Drop-oldest may drop the first events (and a `missed` notice) of a reader.
    match seen.join {
        _ if drop_oldest => {}
        Join::After(k) if seen.missed == 0 => {
            if let Some(first) = ids.first() {
                assert_eq!(*first, k + 1, "resumed after {k}: {seen:?}");
            }
        }
        Join::After(_) => {}
        // (Unless the channel had closed: then nothing at all.)
        Join::Stale => assert!(seen.missed == 1 || ids.is_empty(), "{seen:?}"),
        Join::Live => assert_eq!(seen.missed, 0, "{seen:?}"),
    }
    if seen.end == End::Clean && seen.missed == 0 {
        // Nothing published before `close` is lost to a subscriber that stayed.
        if let (Some(last), Join::Live | Join::After(_)) = (ids.last(), &seen.join) {
            assert_eq!(*last, last_published, "{seen:?}");
        }
    }
    if seen.end == End::Cut {
        // (Except a gzip reader that lost pieces: its trailer could not match.)
        assert!(
            !drop_oldest || gzip,
            "drop-oldest never cuts a reader: {seen:?}"
        );
    }
}

fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let drop_oldest = rng.chance(30);
    let options = ChannelOptions {
        history: 16 + rng.below(200) as usize,
        slow_client: if drop_oldest {
            SlowClient::DropOldest
        } else {
            SlowClient::Close
        },
        ..ChannelOptions::default()
    };
    let limits = QueueLimits {
        high_water_mark: 256 + rng.below(4096) as usize,
        max_buffered: 64 * 1024 + rng.below(256 * 1024) as usize,
    };
    let close_early = rng.chance(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ch = Channel::new("race", options);
    let epoch = ch.lock().epoch.to_string();
    let last_published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers = Arc::new(Mutex::new(Vec::new()));

    std::thread::scope(|s| {
        let publishers: Vec<_> = (0..1 + rng.below(3))
            .map(|p| {
                let (ch, last) = (ch.clone(), last_published.clone());
                let mut rng = Rng::new(seed * 31 + p);
                s.spawn(move || {
                    for _ in 0..5 + rng.below(20) {
                        for _ in 0..1 + rng.below(60) {
                            let size = if rng.chance(10) { 2000 } else { 10 };
                            let data = "x".repeat(1 + rng.below(size) as usize);
                            if rng.chance(5) {
                                let _ = ch.broadcast_raw(crate::stream::sse::comment_frame("raw"));
                            }
                            match ch.publish(Event::data_only(data)) {
                                Ok(id) => {
                                    let n = id.rsplit('-').next().unwrap().parse().unwrap();
                                    last.fetch_max(n, SeqCst);
                                }
                                Err(e) => {
                                    assert!(e.is_closed());
                                    return;
                                }
                            }
                        }
                        if rng.chance(50) {
                            std::thread::sleep(Duration::from_micros(rng.below(2000)));
                        }
                    }
                })
            })
            .collect();

        let joiner = {
            let (ch, rt, readers, last, stop) = (
                ch.clone(),
                rt.handle().clone(),
                readers.clone(),
                last_published.clone(),
                stop.clone(),
            );
            let mut rng = Rng::new(seed * 17 + 5);
            let epoch = epoch.clone();
            s.spawn(move || {
                for i in 0..8 + rng.below(24) {
                    let (resp, tx) = StreamingResponse::channel("text/event-stream", limits);
                    let body = resp.into_response().into_body();
                    let slow = rng.chance(30);
                    if rng.chance(50) {
                        body.report_stalls();
                    }
                    let recent = last.load(SeqCst);
                    let join = match rng.below(4) {
                        0 | 1 => Join::Live,
                        2 if recent > 0 => Join::After(recent - rng.below(recent.min(8))),
                        2 => Join::Live,
                        _ => Join::Stale,
                    };
                    let id = match &join {
                        Join::Live => None,
                        Join::After(k) => Some(format!("{epoch}-{k}")),
                        Join::Stale => Some(format!("other{epoch}-{recent}")),
                    };
                    let coding = match rng.below(5) {
                        0 => Coding::new(crate::compress::Encoding::Gzip, None),
                        1 => Coding::new(crate::compress::Encoding::Zstd, None),
                        _ => None,
                    };
                    // Subscribed from the runtime, as a server's route is (the first one
                    // gives the channel its fan-out task).
                    let sub = rt.block_on(async { ch.subscribe_coded(&tx, id.as_deref(), coding) });
                    let (r, stop) = (Rng::new(seed * 1000 + i), stop.clone());
                    let task = rt.spawn(read(body, r, slow, stop));
                    readers.lock().unwrap().push((join, sub, coding, task));
                    if rng.chance(60) {
                        std::thread::sleep(Duration::from_micros(rng.below(3000)));
                    }
                }
            })
        };

        if close_early {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            ch.close();
        }
        for p in publishers {
            p.join().unwrap();
        }
        joiner.join().unwrap();
        ch.close();
    });
    stop.store(true, SeqCst);

    let last = last_published.load(SeqCst);
    let readers = std::mem::take(&mut *readers.lock().unwrap());
    for (join, sub, coding, task) in readers {
        let (bytes, end) = rt.block_on(task).unwrap();
        let text = decode(bytes, coding, &end);
        let (missed, ids) = parse(&text);
        // (A reader that left, or was cut, before reading anything has nothing to show;
        // drop-oldest may drop the notice with the replay.)
        if !text.is_empty() && !drop_oldest {
            let head: String = text.chars().take(300).collect();
            assert_eq!(
                missed,
                usize::from(sub.missed),
                "{join:?} {sub:?} {end:?} {head}"
            );
        }
        check(
            &Seen {
                join,
                missed,
                ids,
                end,
            },
            last,
            drop_oldest,
            coding.is_some_and(|c| c.encoding == crate::compress::Encoding::Gzip),
        );
    }
    let m = ch.metrics();
    assert_eq!(m.subscribers, 0, "close takes every subscriber");
    assert_eq!(m.published, last, "seed {seed}");
}

#[test]
fn random_interleavings_of_publishes_joins_leaves_and_close_lose_nothing() {
    let seeds = std::env::var("RAT_RACE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16u64);
    for seed in 0..seeds {
        run_seed(seed);
    }
}
